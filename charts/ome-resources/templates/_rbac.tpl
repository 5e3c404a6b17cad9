{{- /*
The operator's rights, in three sets, so that cluster-wide and namespaced installs grant the same
rights and differ only in where: every rule names its verbs and resources (no wildcards), and
nothing grants Secrets: model pods and download Jobs reference the hub token by secretKeyRef, so
the kubelet reads it and the operator never does.

- ome.rules.cluster: what only exists cluster-wide (CRDs, nodes, the cluster-scoped ome.io kinds,
  the ClusterKopfPeering, namespaces for a namespace-restricted kopf). Always in the ClusterRole.
- ome.rules.namespaced: what reconciliation does inside a namespace it serves. In the ClusterRole
  without watchNamespaces; with it, in a Role in each watched namespace.
- ome.rules.downloads: the operator's own namespace, where ClusterBaseModels' download Jobs run
  (the cache lists every child kind there too). A Role when that namespace is not watched.
*/ -}}

{{- define "ome.rules.cluster" -}}
# kopf lists the CRDs at startup and watches them to notice served resources appearing later.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# ClusterBaseModels: read and watched; patched by kopf for its finalizer (deletion cleans node labels).
- apiGroups: ["ome.io"]
  resources: ["clusterbasemodels"]
  verbs: ["get", "list", "watch", "patch"]
# Status is the operator's only output on them: replaced whole (update); kopf may still patch it.
- apiGroups: ["ome.io"]
  resources: ["clusterbasemodels/status"]
  verbs: ["update", "patch"]
# Cluster runtimes are only read: listed for selection, watched to re-roll the services using them.
- apiGroups: ["ome.io"]
  resources: ["clusterservingruntimes"]
  verbs: ["list", "watch"]
# Nodes: listed to find download targets; labelled once a verified copy of a model is there.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list", "watch", "patch"]
{{- if .Values.watchNamespaces }}
# A namespace-restricted kopf lists the namespaces to find the ones it serves.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- else if .Values.peering.enabled }}
# Peering: kopf watches every peering object (it cannot filter by name) ...
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch"]
# ... but writes keep-alives only into its own.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  resourceNames: [{{ .Values.peering.name | quote }}]
  verbs: ["get", "patch"]
{{- end }}
{{- end -}}

{{- define "ome.rules.events" -}}
# kopf posts Events about its handlers; reconciliation records Ready transitions, group restarts
# and failures as Events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "ome.rules.children" -}}
# Children: applied with server-side apply (create + patch), watched so an edited or deleted
# child is restored, listed by owner label, deleted when no longer rendered.
- apiGroups: [""]
  resources: ["services", "serviceaccounts", "configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Held only so the operator may grant it: each download Job's Role lets the Job get/patch/update
# its own progress ConfigMap, and RBAC refuses a Role granting more than its creator holds.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "update"]
{{- end -}}

{{- define "ome.rules.namespaced" -}}
{{ include "ome.rules.events" . }}
# Models and InferenceServices: read and watched; patched by kopf for its finalizer.
- apiGroups: ["ome.io"]
  resources: ["inferenceservices", "basemodels"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["ome.io"]
  resources: ["inferenceservices/status", "basemodels/status"]
  verbs: ["update", "patch"]
- apiGroups: ["ome.io"]
  resources: ["servingruntimes"]
  verbs: ["list", "watch"]
# Pods: watched and listed for readiness and failures; a failed member of a multi-node group
# gets its whole group deleted (the StatefulSets recreate it). `get` is also held because the
# router's Role grants it (RBAC lets the operator grant only what it holds).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# The tail of a failed pod's log goes into the group-restart Event.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{ include "ome.rules.children" . }}
{{- if and .Values.watchNamespaces .Values.peering.enabled }}
# Peering: kopf watches every KopfPeering of a namespace it serves ...
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch"]
# ... but writes keep-alives only into its own.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  resourceNames: [{{ .Values.peering.name | quote }}]
  verbs: ["get", "patch"]
{{- end }}
{{- end -}}

{{- define "ome.rules.downloads" -}}
{{ include "ome.rules.events" . }}
# The cache watches every kind of child here; ClusterBaseModels' download pods are read for the
# downloader's termination message. Nothing is served here, so no pod is ever deleted.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{ include "ome.rules.children" . }}
{{- end -}}

{{/* Namespaces with a Role, each with the rule set it gets; empty without watchNamespaces. */}}
{{- define "ome.roleNamespaces" -}}
{{- $roles := dict -}}
{{- if .Values.watchNamespaces -}}
{{- range .Values.watchNamespaces }}{{ $_ := set $roles . "namespaced" }}{{ end -}}
{{- $own := include "ome.operatorNamespace" . -}}
{{- if not (hasKey $roles $own) }}{{ $_ := set $roles $own "downloads" }}{{ end -}}
{{- /* kopf and reconciliation post Events about cluster-scoped objects (ClusterBaseModels) to "default". */ -}}
{{- if not (hasKey $roles "default") }}{{ $_ := set $roles "default" "events" }}{{ end -}}
{{- end -}}
{{- toJson $roles -}}
{{- end -}}

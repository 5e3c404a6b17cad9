{{/* Name of every object of this chart: fixed, so commands in the docs work for any release name. */}}
{{- define "ome.fullname" -}}
{{- .Values.fullnameOverride | default "ome-operator" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator pods; never change them (Deployment selectors are immutable). */}}
{{- define "ome.selectorLabels" -}}
app.kubernetes.io/name: ome-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ome.labels" -}}
{{ include "ome.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ome
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ome.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "ome.operatorNamespace" -}}
{{- .Values.operatorNamespace | default .Release.Namespace -}}
{{- end -}}

{{/* Settings that cannot work together fail the install with a reason instead of a broken operator. */}}
{{- define "ome.validate" -}}
{{- if and (not .Values.peering.enabled) (gt (int .Values.replicas) 1) -}}
{{- fail "peering.enabled=false needs replicas <= 1: standalone replicas would all act on the same objects" -}}
{{- end -}}
{{- if not .Values.modelStorage.roots -}}
{{- fail "modelStorage.roots needs at least one directory: models are written and mounted only below one" -}}
{{- end -}}
{{- range .Values.modelStorage.roots -}}
{{- if or (not (hasPrefix "/" .)) (hasSuffix "/" .) (contains "//" .) (contains "/./" .) (contains "/../" .) (hasSuffix "/.." .) -}}
{{- fail (printf "modelStorage.roots: %q must be a normalized absolute path other than /" .) -}}
{{- end -}}
{{- end -}}
{{- if not (has .Values.logFormat (list "text" "json")) -}}
{{- fail (printf "logFormat must be text or json, not %q" .Values.logFormat) -}}
{{- end -}}
{{- if not (has (upper .Values.logLevel) (list "DEBUG" "INFO" "WARNING" "ERROR")) -}}
{{- fail (printf "logLevel must be DEBUG, INFO, WARNING or ERROR, not %q" .Values.logLevel) -}}
{{- end -}}
{{- end -}}

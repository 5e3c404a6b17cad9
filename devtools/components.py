"""Command lines and config files of the five control-plane processes (devtools.cluster runs them).

Addresses (these machines must never send traffic off loopback):

- every listener binds 127.0.0.1, on ports chosen free at start;
- node InternalIPs and pod IPs are inside 127.0.0.0/8 (devtools.nodes);
- the Service CIDR is loopback too (SERVICE_CIDR): a stray dial of a ClusterIP stays on this
  machine and is refused, instead of leaving through the default route as any other address would;
- kube-apiserver needs a non-loopback advertise address (it publishes it in the `kubernetes`
  Endpoints, whose validation forbids loopback). It gets ADVERTISE_ADDRESS, from TEST-NET-2, and the
  endpoint reconciler is off, so the address is published nowhere and nothing dials it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from devtools import pki
from devtools.nodes import KWOK_ANNOTATION, fallback_pod_cidr

SERVICE_CIDR = "127.96.0.0/16"
SERVICE_IP = "127.96.0.1"  # the first address: the `kubernetes` Service's ClusterIP
ADVERTISE_ADDRESS = "198.51.100.1"  # RFC 5737 TEST-NET-2; published nowhere, never dialed
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

# kwok renews each node's Lease every quarter of this; kube-controller-manager marks a node
# NotReady only after NODE_MONITOR_GRACE without a renewal. The wide margin keeps nodes Ready when
# two cores are saturated by a test run, at the cost of slow failure detection nobody here needs.
NODE_LEASE_SECONDS = 60
NODE_MONITOR_GRACE = "300s"

# Start order; each is healthy before the next starts.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# "kubelet" is the port every node advertises as its kubelet endpoint: the runner (devtools.runner)
# listens there on each node's address and relays to kwok's server, which serves logs and port-forward.
PORTS = ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubelet")

# Standalone kwok has no default stages. These are kwok's own "fast" stages (copied from its module
# by hack/build-cluster-bins.sh): nodes become Ready, pods Running, Job pods Succeeded, and Leases
# (not status updates) carry the node heartbeat.
KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
POD_READY_STAGE = "pod/fast/pod-ready.yaml"
POD_COMPLETE_STAGE = "pod/fast/pod-complete.yaml"

# Pods whose processes devtools.runner starts (the router, SGLang engines, model downloads): kwok
# makes them Running with an IP but not Ready; readiness then comes from the runner's probes against
# the real process, and a download Job's pod ends when its process does (kwok's pod-complete stage
# leaves them alone). The same pattern decides, in the runner, which pods it runs; a pod kwok made
# Ready at once would flash Ready before anything listens, and a Job pod kwok completed would never run.
RUNNER_COMMANDS = (
    r"sglang[.]launch_server|sglang_router[.]launch_router|(^|[ /])smg launch( |$)"
    r"|^download |(^|[ /])ome-operator download "
)
_MANAGED_QUERY = (
    '.spec.containers | map(((.command // []) + (.args // [])) | join(" ")) | join(" ") | test("'
    + RUNNER_COMMANDS.replace("\\", "\\\\")
    + '")'
)
CRDS_FOR_KWOK = ("PortForward", "Logs")

_STARTED_TEMPLATE = """\
{{ $now := Now }}
conditions:
- {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Ready, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
- {type: ContainersReady, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: false
  started: false
  restartCount: 0
  state: {waiting: {reason: ContainerCreating}}
{{ end }}
{{ with NodeIPsWith .spec.nodeName }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _unmanaged_only(stage: dict[str, Any]) -> dict[str, Any]:
    """The stage, restricted to pods the runner does not run."""
    out = {**stage, "spec": dict(stage["spec"])}
    expressions = list(out["spec"]["selector"]["matchExpressions"])
    out["spec"]["selector"] = {
        "matchExpressions": [*expressions, {"key": _MANAGED_QUERY, "operator": "NotIn", "values": ["true"]}]
    }
    return out


def _pod_stages(pod_ready: dict[str, Any]) -> list[dict[str, Any]]:
    """kwok's pod-ready stage for the pods nothing runs, and a pod-started stage for the runner's."""
    unmanaged = _unmanaged_only(pod_ready)
    managed = {
        "apiVersion": pod_ready["apiVersion"],
        "kind": "Stage",
        "metadata": {"name": "pod-started-for-runner"},
        "spec": {
            "resourceRef": pod_ready["spec"]["resourceRef"],
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                    {"key": ".status.podIP", "operator": "DoesNotExist"},
                    {"key": _MANAGED_QUERY, "operator": "In", "values": ["true"]},
                ]
            },
            "next": {"statusTemplate": _STARTED_TEMPLATE},
        },
    }
    return [unmanaged, managed]


# Write requests only, at Metadata level: enough to count an operator's writes per user.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # kwok's node heartbeats would otherwise be most of the file.
        {
            "level": "None",
            "users": [pki.CLIENTS["kwok"][0]],
            "namespaces": ["kube-node-lease"],
            "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
        },
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}

# kubeconfig file in the state dir -> client certificate it carries.
KUBECONFIGS = {
    "kubeconfig": "admin",
    "kube-controller-manager.kubeconfig": "kube-controller-manager",
    "kube-scheduler.kubeconfig": "kube-scheduler",
    "kwok.kubeconfig": "kwok",
}


def kubeconfig(name: str, server: str, ca: Path, cert: pki.ClientCert, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert.cert), "client-key": str(cert.key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }


def write_configs(state_dir: Path, cluster_name: str, certs: pki.Pki, bin_dir: Path, api_port: int) -> None:
    server = f"https://127.0.0.1:{api_port}"
    context = f"ome-{cluster_name}"
    for filename, client in KUBECONFIGS.items():
        cfg = kubeconfig(context, server, certs.ca_cert, certs.clients[client], f"{context}-{client}")
        (state_dir / filename).write_text(yaml.safe_dump(cfg, sort_keys=False))
    (state_dir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
    stages = bin_dir / "kwok-stages"
    docs = []
    for name in KWOK_STAGE_FILES:
        text = (stages / name).read_text().strip()
        if name == POD_READY_STAGE:
            docs += [yaml.safe_dump(d, sort_keys=False).strip() for d in _pod_stages(yaml.safe_load(text))]
        elif name == POD_COMPLETE_STAGE:
            docs.append(yaml.safe_dump(_unmanaged_only(yaml.safe_load(text)), sort_keys=False).strip())
        else:
            docs.append(text)
    (state_dir / "kwok.yaml").write_text("\n---\n".join(docs) + "\n")


def kwok_crds() -> list[dict[str, Any]]:
    """CRDs for the kwok kinds the runner writes (kwok --enable-crds watches them): an open schema,
    since kwok validates what it reads itself."""
    crds = []
    for kind in CRDS_FOR_KWOK:
        plural = {"PortForward": "portforwards", "Logs": "logs"}[kind]
        crds.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kwok.x-k8s.io"},
                "spec": {
                    "group": "kwok.x-k8s.io",
                    "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                    "versions": [
                        {
                            "name": "v1alpha1",
                            "served": True,
                            "storage": True,
                            "subresources": {"status": {}},
                            "schema": {
                                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    ],
                },
            }
        )
    return crds


def argv(d: Path, ports: dict[str, int], certs: pki.Pki, audit_log: Path, slot: int = 0) -> dict[str, list[str]]:
    """Flags per component (without the binary). `d` is the cluster's state dir."""
    srv = certs.serving
    secure = [
        "--bind-address=127.0.0.1",
        f"--tls-cert-file={srv.cert}",
        f"--tls-private-key-file={srv.key}",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        "--profiling=false",
        # Neither talks to anything that would need to rate-limit it; defaults (20 qps) slow tests.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        # One instance each, restarted with a fresh etcd: nothing to elect, no lease to wait out.
        "--leader-elect=false",
    ]
    etcd = f"http://127.0.0.1:{ports['etcd']}"
    peer = f"http://127.0.0.1:{ports['etcd-peer']}"
    kubelet_client = certs.clients["apiserver-kubelet-client"]
    return {
        "etcd": [
            "--name=local",
            f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={etcd}",
            f"--advertise-client-urls={etcd}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            # The data is thrown away with the cluster; fsync only costs time.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            f"--etcd-servers={etcd}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            f"--advertise-address={ADVERTISE_ADDRESS}",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={srv.cert}",
            f"--tls-private-key-file={srv.key}",
            f"--client-ca-file={certs.ca_cert}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={certs.sa_pub}",
            f"--service-account-signing-key-file={certs.sa_key}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            # logs, exec and port-forward dial the node; by default the apiserver tries the node's
            # hostname first, which means a DNS query to the host's resolver (off loopback). Only
            # ever dial the loopback InternalIP.
            "--kubelet-preferred-address-types=InternalIP",
            # Webhooks and aggregated APIs get reached through endpoints, never through a ClusterIP.
            "--enable-aggregator-routing=true",
            f"--audit-policy-file={d / 'audit-policy.yaml'}",
            f"--audit-log-path={audit_log}",
            "--audit-log-maxsize=200",
            "--audit-log-maxbackup=1",
            "--profiling=false",
            # On SIGTERM (a test restarting it "as in an upgrade"), end the open watches after 2 s
            # instead of waiting 60 s for them to go idle: every client reconnects either way.
            "--shutdown-watch-termination-grace-period=2s",
        ],
        "kube-controller-manager": [
            *secure,
            f"--secure-port={ports['kube-controller-manager']}",
            f"--kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
            # Signs tokens for the controllers' own ServiceAccounts (and any TokenRequest a test makes
            # goes through the apiserver with the same key), and puts the CA in every namespace.
            f"--root-ca-file={certs.ca_cert}",
            f"--service-account-private-key-file={certs.sa_key}",
            "--use-service-account-credentials=true",
            # Endpoints and EndpointSlices may not hold loopback addresses, and every pod IP here is
            # one; these two controllers could only fail and retry (with a warning Event each time).
            "--controllers=*,-endpoints-controller,-endpointslice-controller",
            "--node-monitor-period=10s",
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
        ],
        "kube-scheduler": [
            *secure,
            f"--secure-port={ports['kube-scheduler']}",
            f"--kubeconfig={d / 'kube-scheduler.kubeconfig'}",
        ],
        "kwok": [
            f"--kubeconfig={d / 'kwok.kubeconfig'}",
            f"--config={d / 'kwok.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={'='.join(KWOK_ANNOTATION)}",
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            f"--cidr={fallback_pod_cidr(slot)}",
            "--node-ip=127.0.0.1",
            # Only --server-address keeps kwok's server on loopback: a bare --node-port binds 0.0.0.0.
            f"--server-address=127.0.0.1:{ports['kwok']}",
            # What the nodes advertise as their kubelet port; the runner relays it to the address above.
            f"--node-port={ports['kubelet']}",
            f"--enable-crds={','.join(CRDS_FOR_KWOK)}",
        ],
    }


def health_urls(ports: dict[str, int]) -> dict[str, str]:
    return {
        "etcd": f"http://127.0.0.1:{ports['etcd']}/health",
        "kube-apiserver": f"https://127.0.0.1:{ports['kube-apiserver']}/readyz",
        "kube-controller-manager": f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz",
        "kube-scheduler": f"https://127.0.0.1:{ports['kube-scheduler']}/healthz",
        "kwok": f"http://127.0.0.1:{ports['kwok']}/healthz",
    }


def install_kwok_crds(api: Any, timeout: float = 30) -> None:
    """Create kwok_crds() with an admin ApiClient and wait until they are Established."""
    import time

    from kubernetes import client

    ext: Any = client.ApiextensionsV1Api(api)
    for crd in kwok_crds():
        ext.create_custom_resource_definition(crd)
    deadline = time.monotonic() + timeout
    for crd in kwok_crds():
        while True:
            got = ext.read_custom_resource_definition(crd["metadata"]["name"])
            if any(c.type == "Established" and c.status == "True" for c in (got.status.conditions or [])):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{crd['metadata']['name']} not Established after {timeout:.0f} s")
            time.sleep(0.1)

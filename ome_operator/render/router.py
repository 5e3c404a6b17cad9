"""The router (sglang-router with label-selector discovery) and the Service named after the InferenceService.

The router may only get/list/watch pods in its own namespace: that is all service discovery needs.
"""

from __future__ import annotations

from . import names
from .context import IsvcContext
from .merge import Obj
from .pods import pod_metadata, pod_part, role_runner
from .workload import ports_of

ROUTER_NAME = "router"
EXTERNAL_COMPONENT = "external-service"


def render_router(ctx: IsvcContext, component: Obj) -> list[Obj]:
    name = names.component_name(ctx.name, "router")
    account = names.router_account_name(ctx.name)
    runner = role_runner(component, None, default_name=ROUTER_NAME)
    for port in runner.get("ports") or []:
        port.setdefault("protocol", "TCP")
    config_env = [{"name": k, "value": v} for k, v in sorted((component.get("config") or {}).items())]
    if config_env:
        known = {e["name"] for e in config_env}
        runner["env"] = [*config_env, *(e for e in runner.get("env") or [] if e.get("name") not in known)]
    selector = names.isvc_labels(ctx.name, "router")
    pod_spec = {**pod_part(component), "serviceAccountName": account}
    containers = [c for c in pod_spec.get("containers") or [] if c.get("name") != runner["name"]]
    pod_spec["containers"] = [runner, *containers]
    replicas = component.get("minReplicas")
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": ctx.metadata(account, "router"),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": ctx.metadata(account, "router"),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": ctx.metadata(account, "router"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ctx.namespace}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": ctx.metadata(name, "router"),
            "spec": {
                "replicas": 1 if replicas is None else int(replicas),
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": pod_metadata(component, {**ctx.ome_pod_labels(), **selector}),
                    "spec": pod_spec,
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": ctx.metadata(name, "router"),
            "spec": {"selector": selector, "ports": ports_of(runner) or [_http(8080)]},
        },
    ]


def render_entry_service(ctx: IsvcContext, entry: str, entry_component: Obj, multi_node: bool) -> Obj:
    """The Service named after the InferenceService in front of the router (or the engine).

    Port 80 is the seed walkthrough's (`port-forward service/<isvc> 8080:80`); 8080 is the port OME's
    docs and status URLs use. Both reach the same container port.
    """
    selector = {names.LABEL_ISVC: ctx.name, names.LABEL_COMPONENT: entry}
    if entry != "router" and multi_node:
        selector[names.LABEL_LWS_WORKER_INDEX] = "0"
    role = "leader" if entry != "router" and multi_node else None
    runner = role_runner(entry_component, role, default_name=ROUTER_NAME if entry == "router" else "ome-container")
    ports = runner.get("ports") or []
    target = ports[0]["containerPort"] if ports else 8080
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(ctx.name, EXTERNAL_COMPONENT),
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "http", "port": 80, "targetPort": target, "protocol": "TCP"},
                {"name": "http-8080", "port": 8080, "targetPort": target, "protocol": "TCP"},
            ],
        },
    }


def service_url(ctx: IsvcContext) -> str:
    return f"http://{ctx.name}.{ctx.namespace}.svc.cluster.local"


def _http(port: int) -> Obj:
    return {"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}

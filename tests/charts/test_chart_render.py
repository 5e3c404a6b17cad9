"""charts/ome-resources as helm renders it: lint, golden output, and what the chart promises.

These need the helm binary that `make cluster-bins` builds, which is what the integration marker
selects for; none of them talks to a cluster (tests/integration/test_chart_rbac.py does).
`pytest tests/charts --update-golden` rewrites tests/charts/golden/<case>/expected.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .helm import CHART, expand_rules, find, render, render_error, render_text, run_helm

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "values.yaml").is_file())
Docs = list[dict[str, Any]]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Docs]:
    return {case: render(values_file=GOLDEN / case / "values.yaml") for case in CASES}


def container(docs: Docs) -> dict[str, Any]:
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    return dict(pod["containers"][0])


def flags(docs: Docs) -> dict[str, list[str]]:
    """`ome-operator run` flags as name -> values (repeatable flags keep every value)."""
    args = container(docs)["args"]
    assert args[0] == "run"
    result: dict[str, list[str]] = {}
    for arg in args[1:]:
        name, _, value = arg.partition("=")
        result.setdefault(name, []).append(value)
    return result


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_is_clean(case: str) -> None:
    proc = run_helm("lint", "--strict", str(CHART), "--values", str(GOLDEN / case / "values.yaml"))
    # --strict turns warnings into failures; the only remark left is the optional icon.
    remarks = [line for line in proc.stdout.splitlines() if line.startswith("[") and "icon is recommended" not in line]
    assert remarks == [], proc.stdout


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_golden: bool) -> None:
    actual = render_text(values_file=GOLDEN / case / "values.yaml")
    path = GOLDEN / case / "expected.yaml"
    if update_golden:
        path.write_text(actual)
        return
    assert path.exists(), f"{path} missing: run `pytest tests/charts --update-golden` and review it"
    assert actual == path.read_text(), (
        f"{path} differs from `helm template`: run `pytest tests/charts --update-golden` and review the diff"
    )


def test_default_install_creates_exactly_these_objects(rendered: dict[str, Docs]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered["default"])
    assert kinds == [
        ("ClusterKopfPeering", "ome-operator"),
        ("ClusterRole", "ome-operator"),
        ("ClusterRoleBinding", "ome-operator"),
        ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
        ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
        ("Deployment", "ome-operator"),
        ("PodDisruptionBudget", "ome-operator"),
        ("Service", "ome-operator-metrics"),
        ("ServiceAccount", "ome-operator"),
    ]


def test_two_peered_replicas_with_probes_on_the_health_port(rendered: dict[str, Docs]) -> None:
    docs = rendered["default"]
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    main = container(docs)
    assert flags(docs)["--peering"] == ["ome-operator"]
    # The probes reach the server only if it listens on every interface of the pod, on the named port.
    assert flags(docs)["--health-listen"] == ["0.0.0.0:8081"]
    assert main["ports"] == [{"name": "http-metrics", "containerPort": 8081, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    env = {e["name"]: e for e in main["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # kopf's identity in the peering object: which pod is active, at a glance.
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # No fixed priority: each replica draws a random one, so replicas never tie and all pause.
    assert "OME_PEERING_PRIORITY" not in env
    assert "--peering-priority" not in flags(docs)
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ome-operator"
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


@pytest.mark.parametrize("case", CASES)
def test_operator_pod_is_restricted(rendered: dict[str, Docs], case: str) -> None:
    docs = rendered[case]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(docs)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert all("hostPath" not in volume for volume in pod.get("volumes") or [])


def test_every_setting_reaches_the_operator(rendered: dict[str, Docs]) -> None:
    docs = rendered["full"]
    assert flags(docs) == {
        "--operator-namespace": ["ome-downloads"],
        # The download Jobs run the operator's own image.
        "--image": ["registry.example/ome/ome-operator:0.1.0-rc1"],
        "--hf-endpoint": ["http://hub-mirror.example:8090"],
        "--peering": ["ome-ha"],
        "--peering-lifetime": ["15"],
        "--namespace": ["team-a", "team-b"],
        "--health-listen": ["0.0.0.0:9090"],
        "--resync-seconds": ["120", "30"],
        "--workers": ["8"],
        "--watch-deadline": ["600"],
        "--reconcile-deadline": ["900"],
        "--log-format": ["text"],
        "--log-level": ["DEBUG"],
    }
    main = container(docs)
    assert main["image"] == "registry.example/ome/ome-operator:0.1.0-rc1"
    assert main["imagePullPolicy"] == "Always"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"} in main["env"]
    pod = find(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "pull-secret"}]
    assert "podAntiAffinity" not in pod["spec"]["affinity"]  # replaced, not merged


def test_default_image_is_the_chart_version(rendered: dict[str, Docs]) -> None:
    assert container(rendered["default"])["image"] == "ome-operator:0.1.0"
    assert flags(rendered["default"])["--image"] == ["ome-operator:0.1.0"]
    assert flags(rendered["default"])["--operator-namespace"] == ["ome"]


@pytest.mark.parametrize("case", CASES)
def test_metrics_service_selects_the_operator_pods(rendered: dict[str, Docs], case: str) -> None:
    docs = rendered[case]
    pod_labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = find(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http-metrics"]
    for kind in ("PodDisruptionBudget",):
        for doc in (d for d in docs if d["kind"] == kind):
            assert doc["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_service_monitor_scrapes_the_metrics_port(rendered: dict[str, Docs]) -> None:
    docs = rendered["full"]
    monitor = find(docs, "ServiceMonitor")
    service = find(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {"port": "http-metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    ]
    assert not [d for d in rendered["default"] if d["kind"] == "ServiceMonitor"]


def test_disruption_budget_never_blocks_a_drain(rendered: dict[str, Docs]) -> None:
    assert find(rendered["default"], "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "ome-operator", "app.kubernetes.io/instance": "ome"}},
    }
    assert not [d for d in rendered["single-replica"] if d["kind"] == "PodDisruptionBudget"]


def test_dashboard_ships_as_a_configmap_only_when_enabled(rendered: dict[str, Docs]) -> None:
    configmap = find(rendered["full"], "ConfigMap", "ome-operator-dashboard")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "OME"}
    shipped = json.loads(configmap["data"]["ome-operator.json"])
    assert shipped == json.loads((CHART / "dashboards" / "ome-operator.json").read_text())
    assert not [d for d in rendered["default"] if d["kind"] == "ConfigMap"]


def test_peering_object_is_where_the_operator_looks(rendered: dict[str, Docs]) -> None:
    # Cluster-wide, kopf meets its peers in a ClusterKopfPeering; restricted to namespaces, in a
    # KopfPeering in each of them; standalone, nowhere (and the role has no peering rights).
    peering = find(rendered["default"], "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert flags(rendered["default"])["--peering"] == [peering["metadata"]["name"]]
    full = sorted(
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in rendered["full"] if d["kind"] == "KopfPeering"
    )
    assert full == [("team-a", "ome-ha"), ("team-b", "ome-ha")]
    assert not [d for d in rendered["full"] if d["kind"] == "ClusterKopfPeering"]
    single = rendered["single-replica"]
    assert not [d for d in single if d["kind"] in ("KopfPeering", "ClusterKopfPeering")]
    assert "--peering" not in flags(single)


def role_rights(docs: Docs) -> set[tuple[str, str, str, str]]:
    return expand_rules(find(docs, "ClusterRole")["rules"])


@pytest.mark.parametrize("case", CASES)
def test_no_rule_grants_secrets_wildcards_or_escalation(rendered: dict[str, Docs], case: str) -> None:
    docs = rendered[case]
    assert [d["kind"] for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")] == [
        "ClusterRole",
        "ClusterRoleBinding",
    ]
    for rule in find(docs, "ClusterRole")["rules"]:
        words = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule.get("verbs", [])]
        assert "*" not in words, rule
        assert not any(r == "secrets" or r.startswith("secrets/") for r in rule.get("resources", [])), rule
        assert not {"escalate", "bind", "impersonate"} & set(rule.get("verbs", [])), rule
        assert "nonResourceURLs" not in rule, rule
    binding = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "ome-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ome-operator", "namespace": "ome"}]


def test_namespaced_operator_lists_namespaces_and_peers_per_namespace(rendered: dict[str, Docs]) -> None:
    default, full = role_rights(rendered["default"]), role_rights(rendered["full"])
    # kopf lists namespaces only when restricted to some of them.
    assert ("", "namespaces", "list", "") not in default
    assert {("", "namespaces", "list", ""), ("", "namespaces", "watch", "")} <= full
    assert ("kopf.dev", "kopfpeerings", "patch", "ome-ha") in full
    assert not [r for r in full if r[1] == "clusterkopfpeerings"]
    # Everything else is the same role.
    assert {r for r in default if r[0] != "kopf.dev"} == {
        r for r in full if r[0] != "kopf.dev" and r[1] != "namespaces"
    }


def test_standalone_operator_has_no_peering_rights(rendered: dict[str, Docs]) -> None:
    single = role_rights(rendered["single-replica"])
    assert not [r for r in single if r[0] == "kopf.dev"]
    assert single == {r for r in role_rights(rendered["default"]) if r[0] != "kopf.dev"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"peering": {"enabled": False}, "replicas": 2}, "standalone replicas would all act", id="unpeered"
        ),
        pytest.param({"logFormat": "xml"}, "logFormat must be text or json", id="log-format"),
        pytest.param({"logLevel": "verbose"}, "logLevel must be DEBUG, INFO, WARNING or ERROR", id="log-level"),
    ],
)
def test_contradictory_values_fail_the_install(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)

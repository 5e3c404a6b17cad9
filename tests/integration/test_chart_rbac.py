"""Least privilege, proven: the operator runs with nothing but the chart's ServiceAccount.

Both charts are installed with `helm` (the in-cluster Deployment scaled to 0: no image can run
here), a TokenRequest yields a token of the chart's ServiceAccount, and `ome-operator run` uses a
kubeconfig holding only that token to take OME's Kimi K2 reference files, unchanged, to Ready, then
through a group restart and a prune (cluster-wide), and again restricted to one namespace. A right
the operator needs and the chart lacks fails the run (a refusal in its log or a 403 in the audit
log); a right the chart grants beyond the allowlist below fails the allowlist checks, on the
installed ClusterRole and on what the API server says the ServiceAccount may do.

Two rights are held on code reading alone: `get pods/log` (the log tail in a group-restart Event;
kwok serves no logs and the operator treats a failed read as "no log") and `delete` of
StatefulSets, Jobs and ConfigMaps (prune after a scale-down or a node leaving a model's targets).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, reference_files
from tests.charts.dashboard import exported_series, series_in
from tests.charts.dashboard import load as load_dashboard
from tests.charts.dashboard import queries as dashboard_queries
from tests.charts.helm import CHART, CRD_CHART, NAMESPACE, RELEASE, expand_rules, find, render, run_helm
from tests.charts.rights import Right, cluster_allowlist, namespaced_allowlist

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "ome" / "config"
GOLDEN_REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
CRD_RELEASE = "ome-crd"
ACCOUNT = "ome-operator"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
PEERING = "ome-operator"

# Every right of the chart's ClusterRole (default values); the allowlists live in tests/charts/rights.py,
# shared with the render tests. Changing the role means changing them, in review.
ALLOWED = cluster_allowlist(PEERING)

# A refusal as the API server words it, and as kopf does where it tolerates one (it then carries on
# with less: no namespace or CRD watching), which would otherwise pass unnoticed.
# A 403 status, but not the milliseconds of a log timestamp such as "06:09:59,403".
FORBIDDEN_IN_LOG = re.compile(r"(?<![,.:])\b403\b|forbidden|not enough (rbac )?permissions", re.IGNORECASE)


def helm(cluster: ClusterHandle, *args: str, check: bool = True) -> Any:
    return run_helm(f"--kubeconfig={cluster.kubeconfig}", *args, check=check, timeout=300)


def adopt_existing_crds(cluster: ClusterHandle) -> None:
    """Let the ome-crd release take over CRDs applied earlier with kubectl (another test, `make demo`
    on a reused cluster): helm refuses to install over objects that lack its ownership marks."""
    for path in sorted((CRD_CHART / "templates").glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        proc = cluster.kubectl("get", "crd", name, "-o", "json", check=False)
        if proc.returncode != 0:
            continue
        annotations = json.loads(proc.stdout)["metadata"].get("annotations") or {}
        owner = (annotations.get("meta.helm.sh/release-name"), annotations.get("meta.helm.sh/release-namespace"))
        if owner == (CRD_RELEASE, NAMESPACE):
            continue
        cluster.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl(
            "annotate",
            "--overwrite",
            "crd",
            name,
            f"meta.helm.sh/release-name={CRD_RELEASE}",
            f"meta.helm.sh/release-namespace={NAMESPACE}",
        )


@pytest.fixture(scope="module")
def charts(cluster: ClusterHandle) -> Iterator[ClusterHandle]:
    """Both charts installed as a user would; uninstalled afterwards, also when a test failed."""
    namespace_existed = cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0
    try:
        adopt_existing_crds(cluster)
        # As the README installs them: both releases in the operator's namespace.
        helm(
            cluster, "install", CRD_RELEASE, str(CRD_CHART), f"--namespace={NAMESPACE}", "--create-namespace", "--wait"
        )
        cluster.kubectl("wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/managed-by=Helm")
        helm(
            cluster,
            "install",
            RELEASE,
            str(CHART),
            f"--namespace={NAMESPACE}",
            "--set=replicas=0",
            "--wait",
            "--timeout=2m",
        )
        yield cluster
    finally:
        helm(cluster, "uninstall", RELEASE, f"--namespace={NAMESPACE}", "--wait", check=False)
        # The CRDs stay (helm.sh/resource-policy: keep), as they do for users: deleting a CRD deletes
        # every model and InferenceService with it.
        helm(cluster, "uninstall", CRD_RELEASE, f"--namespace={NAMESPACE}", check=False)
        if not namespace_existed:
            cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False)


def token_kubeconfig(cluster: ClusterHandle, path: Path, account: str = ACCOUNT, namespace: str = NAMESPACE) -> Path:
    """A kubeconfig whose only credential is a TokenRequest token of a ServiceAccount (the chart's)."""
    token = cluster.kubectl("create", "token", account, f"--namespace={namespace}", "--duration=1h").stdout.strip()
    server, ca = cluster.server()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def running(op: OperatorProcess) -> Iterator[OperatorProcess]:
    op.start()
    try:
        op.wait_ready(timeout=60)
        yield op
    finally:
        op.stop()


def get_json(cluster: ClusterHandle, *args: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


@contextlib.contextmanager
def reference_objects(cluster: ClusterHandle, keep_namespace: bool = False) -> Iterator[list[Path]]:
    """The reference files applied; deleted on exit while the operator still runs, so kopf
    removes its finalizers and the deletions complete. `keep_namespace`: the files' Namespace
    stays (a namespace-restricted operator's Role is in it; its caller deletes it afterwards)."""
    files = reference_files()
    try:
        cluster.kubectl("apply", *(f"--filename={path}" for path in files))
        yield files
    finally:
        delete = ["delete", "--ignore-not-found", "--wait", "--timeout=90s"]
        if keep_namespace:
            docs = [d for path in reversed(files) for d in yaml.safe_load_all(path.read_text()) if d]
            items = [d for d in docs if d.get("kind") != "Namespace"]
            listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            proc = cluster.kubectl(*delete, "--filename=-", stdin=listed, check=False)
        else:
            proc = cluster.kubectl(*delete, *(f"--filename={path}" for path in reversed(files)), check=False)
        if proc.returncode != 0:
            # The operator died before it could finish: drop its finalizers so nothing is left stuck.
            for obj in ("inferenceservice/kimi-k2-instruct -n kimi-k2-instruct", "clusterbasemodel/kimi-k2-instruct"):
                cluster.kubectl(
                    "patch", *obj.split(), "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
                )
            cluster.kubectl(*delete, *(f"--filename={path}" for path in reversed(files)), check=False)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def assert_never_refused(log: Path) -> None:
    denied = [line for line in log.read_text().splitlines() if FORBIDDEN_IN_LOG.search(line)] if log.exists() else []
    assert not denied, "the operator was refused with the chart's rights:\n" + "\n".join(denied[:20])


def wait_ready(cluster: ClusterHandle, log: Path, *get_args: str) -> dict[str, Any]:
    """The object once its Ready condition is True; fails at the first refusal in the operator's log
    instead of waiting out the deadline."""

    def probe() -> dict[str, Any] | None:
        assert_never_refused(log)
        obj = get_json(cluster, *get_args)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    return wait_for(probe, timeout=120, what=f"{' '.join(get_args)} Ready")


def chart_user_responses(cluster: ClusterHandle, since: str) -> list[dict[str, Any]]:
    """The audit log's completed write requests made with the chart's ServiceAccount since a time."""
    return [
        event
        for event in cluster.audit_events()
        if event.get("stage") == "ResponseComplete"
        and event.get("user", {}).get("username") == USER
        and event.get("requestReceivedTimestamp", "") >= since
    ]


def take_reference_to_ready(
    cluster: ClusterHandle,
    tmp_path: Path,
    peering: tuple[str, ...],
    *args: str,
    then: Callable[[OperatorProcess, Path], None] | None = None,
) -> None:
    """Run the operator with only the chart's token and take the reference files to Ready; `peering`
    is the kubectl address of the peering object it must keep alive; `then` runs once all is Ready."""
    log = tmp_path / "operator.log"
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    op = OperatorProcess(token_kubeconfig(cluster, tmp_path / "kubeconfig"), log, f"--peering={PEERING}", *args)
    namespaced = any(arg.startswith("--namespace=") for arg in args)
    with running(op), reference_objects(cluster, keep_namespace=namespaced):
        # The peering object carries this operator's keep-alive: the peering rights work.
        wait_for(
            lambda: (get_json(cluster, *peering) or {}).get("status"),
            timeout=30,
            what=f"a keep-alive in {' '.join(peering)}",
        )
        model = wait_ready(cluster, log, "clusterbasemodel", "kimi-k2-instruct")
        assert model["status"]["state"] == "Ready", model["status"]
        isvc = wait_ready(cluster, log, *ISVC)
        assert condition(isvc, "ModelReady").get("status") == "True"
        # Every series the Grafana dashboard queries is on the running operator's /metrics.
        status, metrics = op.get("/metrics")
        assert status == 200
        wanted = set().union(*(series_in(expr) for _, expr in dashboard_queries(load_dashboard())))
        assert wanted <= exported_series(metrics).keys()
        if then is not None:
            then(op, log)

    assert_never_refused(log)
    if cluster.audit_log is not None:
        responses = chart_user_responses(cluster, started)
        # The objects were written with the chart's identity, not an admin's.
        assert any(e.get("objectRef", {}).get("resource") == "statefulsets" for e in responses)
        # RBAC's own verdict: a 403 may also come from admission (e.g. a write racing the deletion of
        # its namespace at cleanup), which says nothing about the chart's rights.
        refused = [
            f"{e['verb']} {e.get('objectRef', {}).get('resource')} {e.get('objectRef', {}).get('name')}"
            for e in responses
            if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
        ]
        assert not refused, f"writes refused to {USER}: {refused}"


ISVC = ("inferenceservice", "kimi-k2-instruct", "--namespace=kimi-k2-instruct")


def restart_a_group_and_prune_the_router(cluster: ClusterHandle, log: Path) -> None:
    """The paths Ready alone never takes: a restarted container recreates its group (pods deleted,
    an Event recorded) and a component removed from the spec is pruned (its children deleted)."""
    pods = (get_json(cluster, "pods", "--namespace=kimi-k2-instruct", "-l", "component=engine") or {})["items"]
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    victim = min(pods, key=lambda p: p["metadata"]["name"])
    container = victim["spec"]["containers"][0]
    # kwok runs no containers; the status a kubelet would report after an OOM kill is written by hand.
    failed = {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": True,
        "started": True,
        "restartCount": 1,
        "state": {"running": {"startedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    }
    cluster.kubectl(
        "patch",
        "pod",
        victim["metadata"]["name"],
        "--namespace=kimi-k2-instruct",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"containerStatuses": [failed]}}),
    )

    def recreated() -> bool:
        assert_never_refused(log)
        now = (get_json(cluster, "pods", "--namespace=kimi-k2-instruct", "-l", "component=engine") or {})["items"]
        uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in now}
        return uids.keys() == before.keys() and all(uids[name] != uid for name, uid in before.items())

    wait_for(recreated, timeout=90, what="the engine group recreated")
    wait_ready(cluster, log, *ISVC)

    # PD without a router is refused (RouterRequired), so the decoder goes with it: engine-only stays valid.
    remove = '[{"op": "remove", "path": "/spec/router"}, {"op": "remove", "path": "/spec/decoder"}]'
    cluster.kubectl("patch", *ISVC, "--type=json", "-p", remove)

    def pruned() -> bool:
        assert_never_refused(log)
        return get_json(cluster, "deployment", "kimi-k2-instruct-router", "--namespace=kimi-k2-instruct") is None

    wait_for(pruned, timeout=60, what="the router Deployment pruned")
    wait_ready(cluster, log, *ISVC)


def test_operator_reaches_ready_with_only_the_charts_rights(charts: ClusterHandle, tmp_path: Path) -> None:
    cluster = charts
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    take_reference_to_ready(
        cluster,
        tmp_path,
        ("clusterkopfpeering", PEERING),
        then=lambda _, log: restart_a_group_and_prune_the_router(cluster, log),
    )
    if cluster.audit_log is not None:
        done = {
            (e["verb"], e.get("objectRef", {}).get("resource"))
            for e in chart_user_responses(cluster, started)
            if e.get("responseStatus", {}).get("code", 0) < 300
        }
        # Each of these went through with the chart's rights, so each right is proven needed and held.
        for right in (
            ("delete", "pods"),
            ("create", "events"),
            ("delete", "deployments"),
            ("delete", "services"),
            ("delete", "serviceaccounts"),
            ("delete", "roles"),
            ("delete", "rolebindings"),
            ("patch", "nodes"),
            ("patch", "clusterkopfpeerings"),
        ):
            assert right in done, f"{right} never happened: {sorted(done)}"


def test_namespaced_operator_reaches_ready_with_only_the_charts_rights(charts: ClusterHandle, tmp_path: Path) -> None:
    """watchNamespaces: the ClusterRole keeps only cluster-scoped rights; the watched namespace gets
    a Role with what reconciliation does there, the operator's namespace one for ClusterBaseModel
    downloads, "default" one for Events about cluster-scoped objects, and any other namespace
    nothing. The operator, with only these rights, still takes the reference files to Ready (a
    cluster-scoped model downloaded in the operator's namespace, served in the watched one)."""
    cluster = charts
    namespace = "kimi-k2-instruct"
    upgrade = ["upgrade", RELEASE, str(CHART), f"--namespace={NAMESPACE}", "--reuse-values", "--wait"]
    # The chart puts a KopfPeering and a Role into each watched namespace, so the namespace comes first.
    cluster.kubectl("create", "namespace", namespace)
    try:
        helm(cluster, *upgrade, f"--set-json=watchNamespaces={json.dumps([namespace])}")
        cluster_rights, roles = namespaced_allowlist([namespace], NAMESPACE, PEERING)
        installed = expand_rules((get_json(cluster, "clusterrole", ACCOUNT) or {})["rules"])
        assert installed == cluster_rights, (
            f"beyond: {sorted(installed - cluster_rights)}; missing: {sorted(cluster_rights - installed)}"
        )
        for where, allowed in roles.items():
            role = expand_rules((get_json(cluster, "role", ACCOUNT, f"--namespace={where}") or {})["rules"])
            assert role == allowed, f"{where}: beyond {sorted(role - allowed)}; missing {sorted(allowed - role)}"
        print_namespaced_rights(cluster_rights, roles)
        check_effective_namespaced_rights(cluster, tmp_path, cluster_rights, roles)
        take_reference_to_ready(
            cluster, tmp_path, ("kopfpeering", PEERING, f"--namespace={namespace}"), f"--namespace={namespace}"
        )
    finally:
        helm(cluster, *upgrade, "--set-json=watchNamespaces=[]", check=False)
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=120s", check=False)


def print_namespaced_rights(cluster_rights: frozenset[Right], roles: dict[str, frozenset[Right]]) -> None:
    """The rights a namespaced install grants, listed (pytest -s shows them)."""
    print("\nnamespaced install: ClusterRole")
    for right in sorted(cluster_rights):
        print("  ", *right)
    for where, allowed in sorted(roles.items()):
        print(f"Role in {where}")
        for right in sorted(allowed):
            print("  ", *right)


def check_effective_namespaced_rights(
    cluster: ClusterHandle, tmp_path: Path, cluster_rights: frozenset[Right], roles: dict[str, frozenset[Right]]
) -> None:
    """What the API server says the ServiceAccount may do, namespace by namespace: the ClusterRole
    everywhere, a namespace's Role only there; pods/log and ConfigMaps nowhere else."""
    kubeconfig = token_kubeconfig(cluster, tmp_path / "namespaced-kubeconfig")
    with cluster.temp_namespace("rbac-elsewhere") as elsewhere:
        cluster.kubectl("create", "serviceaccount", "baseline", f"--namespace={elsewhere}")
        baseline = token_kubeconfig(cluster, tmp_path / "namespaced-baseline", "baseline", elsewhere)
        for where, allowed in [*roles.items(), (elsewhere, frozenset())]:
            review = self_rules_review(cluster, kubeconfig, where)
            assert not review.get("incomplete"), review
            everyone = expand_rules(self_rules_review(cluster, baseline, where)["resourceRules"])
            effective = expand_rules(review["resourceRules"]) - everyone
            expected = cluster_rights | allowed
            assert effective == expected, (
                f"in {where}: beyond {sorted(effective - expected)}; missing {sorted(expected - effective)}"
            )
        for verb, resource in (
            ("get", "pods/log"),
            ("get", "configmaps"),
            ("update", "configmaps"),
            ("delete", "pods"),
        ):
            kind, _, sub = resource.partition("/")
            where_flag = f"--namespace={elsewhere}"
            proc = cluster.kubectl(
                "auth", "can-i", verb, kind, f"--subresource={sub}", f"--as={USER}", where_flag, check=False
            )
            assert proc.stdout.strip() == "no", f"{USER} may {verb} {resource} in an unwatched namespace"


def test_clusterrole_matches_the_allowlist(charts: ClusterHandle) -> None:
    role = get_json(charts, "clusterrole", ACCOUNT)
    assert role is not None
    for rule in role["rules"]:
        words = [word for key in ("apiGroups", "resources", "verbs", "resourceNames") for word in rule.get(key) or []]
        assert "*" not in words and not [w for w in words if w.startswith("secrets")], rule
    installed = expand_rules(role["rules"])
    extra, missing = sorted(installed - ALLOWED), sorted(ALLOWED - installed)
    assert not extra and not missing, f"rights beyond the allowlist: {extra}; allowlisted but not granted: {missing}"
    # What `helm template` shows a reviewer is what got installed.
    assert expand_rules(find(render(), "ClusterRole")["rules"]) == installed


def self_rules_review(cluster: ClusterHandle, kubeconfig: Path, namespace: str) -> dict[str, Any]:
    """What the API server says the kubeconfig's identity may do in a namespace (cluster-wide rights included)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    # --validate=false: client-side validation would first list CRDs, which an unbound account may not.
    proc = cluster.kubectl(
        f"--kubeconfig={kubeconfig}", "create", "--validate=false", "-f", "-", "-o", "json", stdin=json.dumps(review)
    )
    status: dict[str, Any] = json.loads(proc.stdout)["status"]
    return status


def test_effective_rights_are_the_allowlist_and_no_secrets(charts: ClusterHandle, tmp_path: Path) -> None:
    cluster = charts
    kubeconfig = token_kubeconfig(cluster, tmp_path / "kubeconfig")
    with cluster.temp_namespace("rbac-baseline") as baseline_namespace:
        # Every ServiceAccount may do a few things (self reviews, reading ClusterTrustBundles, ...);
        # one without any binding of its own tells those apart from what the chart grants.
        cluster.kubectl("create", "serviceaccount", "baseline", f"--namespace={baseline_namespace}")
        baseline = token_kubeconfig(cluster, tmp_path / "baseline", "baseline", baseline_namespace)
        for namespace in (NAMESPACE, "kube-system", baseline_namespace):
            review = self_rules_review(cluster, kubeconfig, namespace)
            assert not review.get("incomplete"), review
            everyone = expand_rules(self_rules_review(cluster, baseline, namespace)["resourceRules"])
            effective = expand_rules(review["resourceRules"]) - everyone
            assert effective == ALLOWED, (
                f"in {namespace}: beyond the allowlist {sorted(effective - ALLOWED)}; "
                f"missing {sorted(ALLOWED - effective)}"
            )
            assert not [r for r in expand_rules(review["resourceRules"]) if r[1].startswith("secrets")], review
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        for scope in ("--all-namespaces", f"--namespace={NAMESPACE}"):
            proc = cluster.kubectl("auth", "can-i", verb, "secrets", f"--as={USER}", scope, check=False)
            assert proc.stdout.strip() == "no", f"{USER} may {verb} secrets ({scope})"
    # kubectl reads TYPE/NAME, so subresources go in --subresource.
    for verb, resource, subresource in (
        ("escalate", "clusterroles", ""),
        ("bind", "clusterroles", ""),
        ("create", "clusterrolebindings", ""),
        ("impersonate", "serviceaccounts", ""),
        ("create", "serviceaccounts", "token"),
        ("create", "pods", "exec"),
    ):
        proc = cluster.kubectl(
            "auth",
            "can-i",
            verb,
            resource,
            f"--subresource={subresource}",
            f"--as={USER}",
            "--all-namespaces",
            check=False,
        )
        assert proc.stdout.strip() == "no", f"{USER} may {verb} {resource} {subresource}"

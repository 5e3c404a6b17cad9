"""The kubelet-like parts of the local cluster's runner, on real short-lived processes, and the
serving probes and bootstrap-port annotation the operator renders for engine leaders."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from devtools.runner_pod import ContainerRun, pod_status
from devtools.standin_args import CommandRefused, parse_engine_command, resolve, words
from ome_operator.api.load import load_paths
from ome_operator.render.bundle import render_bundle
from ome_operator.render.context import Settings

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"


def _pod(restart_policy: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"restartPolicy": restart_policy, "containers": [{"name": "c", "image": "i"}]},
        "status": {"podIP": "127.0.0.1", "startTime": "2026-01-01T00:00:00Z", "conditions": []},
    }


def _run(tmp_path: Path, code: int) -> ContainerRun:
    def launch(_: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-c", f"print('hello'); raise SystemExit({code})"], {}

    return ContainerRun(spec={"name": "c"}, workdir=tmp_path, launch=launch)


def _step_until(run: ContainerRun, pod: dict[str, Any], policy: str, done: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        run.step(pod, policy, lambda _: None)
        time.sleep(0.05)
    assert done()


def test_always_restarts_with_restart_count_last_state_and_previous_log(tmp_path: Path) -> None:
    pod = _pod("Always")
    run = _run(tmp_path, 3)
    run.start(pod)
    _step_until(run, pod, "Always", lambda: run.restarts == 1)
    status = pod_status(pod, {"c": run})["containerStatuses"][0]
    assert status["restartCount"] == 1 and status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff" and not status["ready"]
    _step_until(run, pod, "Always", lambda: run.previous_log_path.exists())  # restarted after the delay
    assert " stdout F hello" in run.previous_log_path.read_text()  # CRI log format, for kubectl logs
    run.stop()


def test_never_and_on_failure_end_the_pod(tmp_path: Path) -> None:
    for policy, code, phase in (("Never", 3, "Failed"), ("OnFailure", 0, "Succeeded"), ("Never", 0, "Succeeded")):
        pod = _pod(policy)
        run = _run(tmp_path / f"{policy}-{code}", code)
        run.start(pod)
        _step_until(run, pod, policy, lambda r=run: r.terminated is not None)
        status = pod_status(pod, {"c": run})
        assert status["phase"] == phase, (policy, code, status)
        assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == code
        assert run.restarts == 0


def _rendered(runtime_edit: Any = None, annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    docs = [
        yaml.safe_load(p.read_text()) for p in (REFERENCE / "Kimi-K2-Instruct.yaml", REFERENCE / "kimi-k2-pd-rt.yaml")
    ]
    isvc_docs = list(yaml.safe_load_all((REFERENCE / "kimi-k2-pd.yaml").read_text()))
    if runtime_edit:
        runtime_edit(docs[1])
    if annotations:
        isvc = next(d for d in isvc_docs if d["kind"] == "InferenceService")
        isvc["metadata"].setdefault("annotations", {}).update(annotations)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.yaml"
        path.write_text(yaml.safe_dump_all([*docs, *isvc_docs]))
        loaded = load_paths([path])
    bundle = render_bundle(loaded.objects, Settings(), ["node-0"])
    return [o for o in bundle.objects if o["kind"] == "StatefulSet"]


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    sts = next(o for o in objects if o["metadata"]["name"] == name)
    return dict(sts["spec"]["template"]["spec"]["containers"][0])


def test_leaders_get_health_probes_workers_do_not_and_prefill_pods_carry_the_bootstrap_port() -> None:
    objects = _rendered()
    leader = _container(objects, "kimi-k2-instruct-decoder-0")
    assert leader["readinessProbe"]["httpGet"] == {"path": "/health", "port": 30000, "scheme": "HTTP"}
    startup = leader["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 1800  # 30 minutes to load the model
    assert "readinessProbe" not in _container(objects, "kimi-k2-instruct-decoder-0-worker")
    for name in ("kimi-k2-instruct-engine-0", "kimi-k2-instruct-engine-0-worker"):
        sts = next(o for o in objects if o["metadata"]["name"] == name)
        assert sts["spec"]["template"]["metadata"]["annotations"] == {"sglang.ai/bootstrap-port": "8998"}
    decoder = next(o for o in objects if o["metadata"]["name"] == "kimi-k2-instruct-decoder-0")
    assert "sglang.ai/bootstrap-port" not in (decoder["spec"]["template"]["metadata"].get("annotations") or {})


def test_startup_timeout_annotation_bootstrap_port_flag_and_own_probes() -> None:
    def edit(runtime: dict[str, Any]) -> None:
        engine = runtime["spec"]["engineConfig"]["leader"]["runner"]
        engine["command"] += ["--disaggregation-bootstrap-port", "9100"]
        runtime["spec"]["engineConfig"]["worker"]["runner"]["command"] += ["--disaggregation-bootstrap-port", "9100"]
        decoder = runtime["spec"]["decoderConfig"]["leader"]["runner"]
        decoder["readinessProbe"] = {"tcpSocket": {"port": 30000}}

    objects = _rendered(edit, {"ome.io/startup-timeout-seconds": "600"})
    engine = _container(objects, "kimi-k2-instruct-engine-0")
    assert engine["startupProbe"]["failureThreshold"] * engine["startupProbe"]["periodSeconds"] == 600
    sts = next(o for o in objects if o["metadata"]["name"] == "kimi-k2-instruct-engine-0")
    assert sts["spec"]["template"]["metadata"]["annotations"]["sglang.ai/bootstrap-port"] == "9100"
    decoder = _container(objects, "kimi-k2-instruct-decoder-0")
    assert decoder["readinessProbe"] == {"tcpSocket": {"port": 30000}} and "startupProbe" not in decoder


def test_standin_reads_flags_per_release_and_refuses_like_argparse() -> None:
    base = ["python3", "-m", "sglang.launch_server", "--model-path", "/m", "--tp-size", "32", "--nnodes", "4"]
    args = parse_engine_command("lmsysorg/sglang:v0.5.23", base)
    assert (args.version, args["--tp-size"], args["--nnodes"], args["--port"]) == ("0.5.23", 32, 4, 30000)
    old = parse_engine_command("lmsysorg/sglang:dev", [*base, "--enable-deepep-moe"])
    assert old.version == "0.4.9.post2" and old["--tp-size"] == 32  # the dest is tensor_parallel_size there
    try:
        parse_engine_command("lmsysorg/sglang:v0.5.23", [*base, "--enable-deepep-moe"])
    except CommandRefused as exc:
        assert "--enable-deepep-moe" in str(exc)
    else:
        raise AssertionError("0.5.23 has no --enable-deepep-moe")


def test_standin_dns_and_words(tmp_path: Path) -> None:
    dns = tmp_path / "dns.json"
    dns.write_text('{"records": {"a-0.a.ns.svc.cluster.local": "127.1.0.5"}}')
    assert resolve("a-0.a.ns", "ns", dns) == "127.1.0.5"
    assert resolve("a-0.a", "ns", dns) == "127.1.0.5"  # the pod's search list
    assert resolve("a-0.b.ns", "ns", dns) is None
    assert resolve("127.9.9.9", "ns", dns) == "127.9.9.9"
    first, again = words("p", 50, ["[stand-in"]), words("p", 50, ["[stand-in"])
    assert first == again and len(first) == 50 and first[0] == "[stand-in"
    assert words("p", 2, ["a", "b", "c"]) == ["a", "b"]

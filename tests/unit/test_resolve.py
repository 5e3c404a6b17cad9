"""The pure core, table-driven: selection, version matching, the resolver and its checks, status.

The resolver is the one `render` and the operator share; the last tests show that the CLI's lines
and the operator's conditions come from the same answer.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest

from ome_operator.api import ClusterBaseModel, ClusterServingRuntime, InferenceService, ServingRuntime
from ome_operator.api import reasons as R
from ome_operator.api.reasons import Cond
from ome_operator.render.bundle import Bundle, add_resolved, render_bundle
from ome_operator.render.context import Settings
from ome_operator.render.download import render_model
from ome_operator.render.resolve import migrate_predictor, resolve
from ome_operator.render.select import ModelFacts, candidates_of, compare_version, select_runtime
from ome_operator.status.conditions import merge_conditions
from ome_operator.status.isvc import ComponentObservation, IsvcFacts, compute_isvc_status

Obj = dict[str, Any]
SETTINGS = Settings()

MODEL: Obj = {
    "apiVersion": "ome.io/v1beta1",
    "kind": "ClusterBaseModel",
    "metadata": {"name": "llama"},
    "spec": {
        "vendor": "meta",
        "modelFormat": {"name": "safetensors", "version": "1.0.0"},
        "modelFramework": {"name": "transformers", "version": "4.42.3"},
        "modelArchitecture": "LlamaForCausalLM",
        "quantization": "bf16",
        "modelParameterSize": "8B",
        "storage": {"storageUri": "hf://meta-llama/Llama-3.1-8B", "path": "/raid/models/llama"},
    },
    "status": {"state": "Ready", "nodesSummary": "2/2"},
}
RUNNER: Obj = {
    "name": "ome-container",
    "image": "lmsysorg/sglang:v0.5.23",
    "command": ["python3", "-m", "sglang.launch_server", "--model-path", "$(MODEL_PATH)", "--port", "8080"],
    "resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}},
}
ROUTER: Obj = {"runner": {"name": "router", "image": "lmsysorg/sgl-model-gateway:v0.3.2"}}


def runtime(name: str = "srt-llama", kind: str = "ClusterServingRuntime", **spec: Any) -> Obj:
    base: Obj = {
        "supportedModelFormats": [
            {
                "modelFormat": {"name": "safetensors", "version": "1.0.0"},
                "modelFramework": {"name": "transformers", "version": "4.42.3"},
                "modelArchitecture": "LlamaForCausalLM",
                "quantization": "bf16",
                "autoSelect": True,
            }
        ],
        "modelSizeRange": {"min": "7B", "max": "9B"},
        "engineConfig": {"runner": copy.deepcopy(RUNNER)},
        "routerConfig": copy.deepcopy(ROUTER),
    }
    base.update(spec)
    meta: Obj = {"name": name}
    if kind == "ServingRuntime":
        meta["namespace"] = "demo"
    return {"apiVersion": "ome.io/v1beta1", "kind": kind, "metadata": meta, "spec": base}


def isvc(**spec: Any) -> Obj:
    base: Obj = {"model": {"name": "llama"}, "engine": {"minReplicas": 1}, "router": {}}
    base.update(spec)
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "svc", "namespace": "demo"},
        "spec": {k: v for k, v in base.items() if v is not None},
    }


def parse_runtime(raw: Obj) -> ClusterServingRuntime | ServingRuntime:
    return (
        ServingRuntime.model_validate(raw)
        if raw["kind"] == "ServingRuntime"
        else ClusterServingRuntime.model_validate(raw)
    )


def run(service: Obj, runtimes: list[Obj] | None = None, model: Obj | None = MODEL) -> Any:
    models = [ClusterBaseModel.model_validate(model)] if model is not None else []
    rts = [parse_runtime(r) for r in (runtimes if runtimes is not None else [runtime()])]
    return resolve(InferenceService.model_validate(service), models, rts, SETTINGS)


# --- version matching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "runtime_version", "operator", "expected"),
    [
        ("1.0", "1.0.0", "Equal", True),
        ("v1.0.0", "1.0.0", None, True),
        ("1.0.0", "1.0.1", "Equal", False),
        ("4.48.3", "4.42.3", "GreaterThan", True),
        ("4.42.3", "4.42.3", "GreaterThan", False),
        ("4.42.3", "4.42.3", "GreaterThanOrEqual", True),
        ("4.42", "4.42.3", "GreaterThanOrEqual", False),  # ordered operators need the same precision
        ("4.48.dev0", "4.48.dev0", "Equal", True),  # unofficial versions compare as text
        ("4.48.dev0", "4.48.0", "GreaterThanOrEqual", False),
    ],
)
def test_compare_version(model: str, runtime_version: str, operator: str | None, expected: bool) -> None:
    assert compare_version(model, runtime_version, operator) is expected


# --- selection: every exclusion reason ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"disabled": True}, "runtime is disabled"),
        ({"supportedModelFormats": []}, "no supportedModelFormats entry has autoSelect: true"),
        (
            {"supportedModelFormats": [{"modelFormat": {"name": "safetensors"}, "autoSelect": False}]},
            "no supportedModelFormats entry has autoSelect: true",
        ),
        (
            {"supportedModelFormats": [{"modelFormat": {"name": "gguf", "version": "1.0.0"}, "autoSelect": True}]},
            "architecture is set on only one side (missing on the runtime)",
        ),
        ({"modelSizeRange": {"min": "60B", "max": "80B"}}, "model size 8B is outside 60B..80B"),
    ],
)
def test_every_exclusion_reason_is_kept(changes: Obj, reason: str) -> None:
    model = ClusterBaseModel.model_validate(MODEL)
    candidates = candidates_of([parse_runtime(runtime(**changes))], "demo")
    selection = select_runtime(ModelFacts.of(model.spec), candidates)
    assert selection.runtime is None
    assert selection.code == R.NO_RUNTIME_FOUND
    assert [(c.name, why) for c, why in selection.excluded] == [("srt-llama", reason)]


def test_namespaced_runtime_wins_and_the_loser_says_why() -> None:
    model = ClusterBaseModel.model_validate(MODEL)
    rts = [parse_runtime(runtime("cluster-rt")), parse_runtime(runtime("ns-rt", "ServingRuntime"))]
    selection = select_runtime(ModelFacts.of(model.spec), candidates_of(rts, "demo"))
    assert selection.runtime is not None and selection.runtime.name == "ns-rt"
    assert selection.code == R.RUNTIME_AUTO_SELECTED
    assert [(c.name, why) for c, why in selection.excluded] == [("cluster-rt", "ranked below ServingRuntime ns-rt")]


# --- the resolver ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "runtimes", "condition", "reason", "path"),
    [
        (isvc(engine=None, router=None), None, R.SPEC_VALID, R.NO_COMPONENT, "spec.engine"),
        (isvc(engine=None), None, R.SPEC_VALID, R.INVALID_SPEC, "spec.router"),
        (isvc(model={"name": "nope"}), None, R.MODEL_READY, R.MODEL_NOT_FOUND, "spec.model.name"),
        (isvc(runtime={"name": "nope"}), None, R.RUNTIME_RESOLVED, R.RUNTIME_NOT_FOUND, "spec.runtime.name"),
        (
            isvc(runtime={"name": "srt-llama"}),
            [runtime(disabled=True)],
            R.RUNTIME_RESOLVED,
            R.RUNTIME_DISABLED,
            "spec.runtime.name",
        ),
        (
            isvc(runtime={"name": "srt-llama"}),
            [runtime(modelSizeRange={"min": "60B", "max": "80B"})],
            R.RUNTIME_RESOLVED,
            R.RUNTIME_INCOMPATIBLE,
            "spec.runtime.name",
        ),
        (isvc(), [], R.RUNTIME_RESOLVED, R.NO_RUNTIME_FOUND, "spec.runtime"),
        (
            isvc(engine={"runner": {"image": ""}}),
            [runtime(engineConfig={"runner": {**RUNNER, "image": None}})],
            R.SPEC_VALID,
            R.CONTAINER_WITHOUT_IMAGE,
            "spec.engine.runner.image",
        ),
        (
            isvc(),
            [runtime(engineConfig={"runner": {**RUNNER, "resources": {"limits": {"nvidia.com/gpu": "0.5"}}}})],
            R.SPEC_VALID,
            R.INVALID_GPU_REQUEST,
            "spec.engine.runner.resources.limits",
        ),
        (
            isvc(engine={"runner": {"resources": {"requests": {"nvidia.com/gpu": 2}}}}),
            None,
            R.SPEC_VALID,
            R.INVALID_GPU_REQUEST,
            "spec.engine.runner.resources",
        ),
        (isvc(decoder={}), None, R.SPEC_VALID, R.RUNTIME_NOT_DISAGGREGATED, "spec.decoder"),
        (
            isvc(decoder={}, router=None),
            [runtime(decoderConfig={"runner": copy.deepcopy(RUNNER)})],
            R.SPEC_VALID,
            R.ROUTER_REQUIRED,
            "spec.router",
        ),
        (isvc(engine={"minReplicas": 5000}), None, R.SPEC_VALID, R.INVALID_SPEC, "spec.engine.minReplicas"),
        (
            isvc(engine={"minReplicas": 5, "maxReplicas": 2}),
            None,
            R.SPEC_VALID,
            R.INVALID_SPEC,
            "spec.engine",
        ),
    ],
)
def test_resolver_names_the_problem(
    service: Obj, runtimes: list[Obj] | None, condition: str, reason: str, path: str
) -> None:
    resolved = run(service, runtimes)
    assert not resolved.renderable
    failing = [c for c in resolved.conditions if c.status is not True and c.type not in R.ADVISORY_CONDITIONS]
    assert (failing[0].type, failing[0].reason, failing[0].path) == (condition, reason, path)


def test_model_states_are_told_apart() -> None:
    disabled = copy.deepcopy(MODEL)
    disabled["spec"]["disabled"] = True
    assert run(isvc(), model=disabled).model_cond.reason == R.MODEL_DISABLED
    deleting = copy.deepcopy(MODEL)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert run(isvc(), model=deleting).model_cond.reason == R.MODEL_BEING_DELETED
    # No status yet: renderable (pods wait on the node label), ModelReady says it is not ready.
    downloading = copy.deepcopy(MODEL)
    del downloading["status"]
    resolved = run(isvc(), model=downloading)
    assert resolved.renderable
    assert resolved.model_cond.reason == R.MODEL_NOT_READY
    assert run(isvc()).model_cond == Cond(
        R.MODEL_READY, True, R.MODEL_READY_REASON, "ClusterBaseModel llama ready on 2/2 nodes"
    )


def test_a_runtime_name_with_waiting_in_it_is_not_a_wait() -> None:
    """Reasons come from codes, never from searching the message."""
    resolved = run(
        isvc(runtime={"name": "waiting-rt"}), [runtime("waiting-rt", modelSizeRange={"min": "1T", "max": "2T"})]
    )
    assert resolved.runtime_cond.reason == R.RUNTIME_INCOMPATIBLE


def test_auto_selection_waits_for_metadata_with_unknown_status() -> None:
    unknown = copy.deepcopy(MODEL)
    del unknown["status"]
    for key in ("modelFormat", "modelFramework", "modelArchitecture", "quantization", "modelParameterSize"):
        del unknown["spec"][key]
    resolved = run(isvc(), model=unknown)
    assert (resolved.runtime_cond.status, resolved.runtime_cond.reason) == (None, R.WAITING_FOR_MODEL_METADATA)
    named = run(isvc(runtime={"name": "srt-llama"}), model=unknown)
    assert named.runtime_cond.reason == R.PROVISIONALLY_ACCEPTED and named.renderable


def test_predictor_is_migrated_as_ome_does() -> None:
    service = isvc(engine=None, router=None, model=None)
    service["spec"]["predictor"] = {
        "minReplicas": 2,
        "model": {"baseModel": "llama", "runtime": "srt-llama", "args": ["--log-level", "debug"]},
    }
    migrated = migrate_predictor(InferenceService.model_validate(service))
    assert migrated is not None
    spec = migrated.spec.to_dict()
    assert spec["model"] == {"name": "llama"} and spec["runtime"] == {"name": "srt-llama"}
    assert spec["engine"] == {"minReplicas": 2, "runner": {"args": ["--log-level", "debug"]}}
    resolved = run(service)
    assert resolved.spec.reason == R.PREDICTOR_MIGRATED and resolved.renderable


def test_engine_args_are_advisory() -> None:
    flags = [*RUNNER["command"], "--enable-deepep-moe"]
    resolved = run(isvc(), [runtime(engineConfig={"runner": {**RUNNER, "command": flags}})])
    assert resolved.renderable  # a refused flag warns, it never blocks
    assert resolved.engine_args is not None and resolved.engine_args.status is False
    assert "--enable-deepep-moe" in resolved.engine_args.message
    assert "--moe-a2a-backend deepep" in resolved.engine_args.message
    clean = run(isvc())
    assert clean.engine_args is not None and clean.engine_args.reason == R.ENGINE_ARGS_ACCEPTED


# --- the same answer in the CLI and the operator ------------------------------------------------


@pytest.mark.parametrize(
    "service",
    [isvc(engine=None, router=None), isvc(model={"name": "nope"}), isvc(runtime={"name": "nope"}), isvc(decoder={})],
)
def test_cli_lines_and_operator_conditions_agree(service: Obj) -> None:
    resolved = run(service)
    bundle = Bundle()
    add_resolved(bundle, resolved)
    status = compute_isvc_status(
        IsvcFacts(generation=1, resolved=resolved.conditions, declared=resolved.declared), None, "t0"
    )
    ready = next(c for c in status["conditions"] if c["type"] == R.READY)
    assert ready["status"] == "False"
    assert bundle.problems
    # Ready carries the first failing part ("<Type>: <path>: <message>"); every CLI line is in it.
    for line in bundle.problems:
        assert f"{line.path}: {line.reason}" in ready["message"]


# --- status ------------------------------------------------------------------------------------


def observation(name: str, ready: bool) -> ComponentObservation:
    return ComponentObservation(name, 1, 1 if ready else 0, 1, 1 if ready else 0, 1)


def facts(**changes: Any) -> IsvcFacts:
    base: Obj = {
        "generation": 3,
        "resolved": [
            Cond(R.SPEC_VALID, True, R.SPEC_ACCEPTED),
            Cond(R.MODEL_READY, True, R.MODEL_READY_REASON),
            Cond(R.RUNTIME_RESOLVED, True, R.RUNTIME_NAMED),
        ],
        "runtime_name": "srt-llama",
        "components": {"engine": observation("engine", True), "router": observation("router", True)},
        "declared": ("engine", "router"),
        "url": "http://svc.demo.svc.cluster.local",
        "applied": True,
    }
    base.update(changes)
    return IsvcFacts(**base)


def test_status_keys_that_no_longer_apply_disappear() -> None:
    before = compute_isvc_status(facts(), None, "t0")
    assert set(before["components"]) == {"engine", "router"}
    after = compute_isvc_status(
        facts(components={"engine": observation("engine", True)}, declared=("engine",)), before, "t1"
    )
    assert set(after["components"]) == {"engine"}
    assert R.ROUTER_READY not in {c["type"] for c in after["conditions"]}
    failed = compute_isvc_status(
        facts(
            resolved=[Cond(R.SPEC_VALID, False, R.NO_COMPONENT, "x", "spec.engine")],
            applied=False,
            components={},
            runtime_name=None,
        ),
        after,
        "t2",
    )
    assert "url" not in failed and "components" not in failed and "runtime" not in failed


@pytest.mark.parametrize(
    ("engine_ready", "previous_status", "expect_since"),
    [(True, "True", "t0"), (False, "True", "t1"), (False, "False", "t0")],
)
def test_transition_time_moves_only_when_status_changes(
    engine_ready: bool, previous_status: str, expect_since: str
) -> None:
    previous = [{"type": R.ENGINE_READY, "status": previous_status, "lastTransitionTime": "t0"}]
    merged = merge_conditions(previous, [Cond(R.ENGINE_READY, engine_ready, "x")], "t1", generation=1)
    assert merged[0]["lastTransitionTime"] == expect_since


def test_ready_waits_on_every_declared_component_but_not_on_advisories() -> None:
    args = Cond(R.ENGINE_ARGS_VALID, False, R.ENGINE_ARGS_REFUSED, "--enable-deepep-moe refused")
    status = compute_isvc_status(facts(resolved=[*facts().resolved, args]), None, "t0")
    ready = next(c for c in status["conditions"] if c["type"] == R.READY)
    assert ready["status"] == "True"
    pending = compute_isvc_status(facts(components={"engine": observation("engine", True)}), None, "t0")
    ready = next(c for c in pending["conditions"] if c["type"] == R.READY)
    assert (ready["status"], ready["reason"]) == ("False", R.NOT_CREATED)


def test_an_unchanged_pass_computes_an_identical_status() -> None:
    first = compute_isvc_status(facts(), None, "t0")
    assert compute_isvc_status(facts(), first, "t9") == first


# --- names and label values ----------------------------------------------------------------------

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def labels_of(obj: Any) -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("labels", "matchLabels", "nodeSelector", "selector") and isinstance(value, dict):
                yield from ((k, v) for k, v in value.items() if isinstance(v, str))
            yield from labels_of(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from labels_of(item)


def test_a_long_model_name_renders_only_valid_label_values() -> None:
    long_model = copy.deepcopy(MODEL)
    long_model["metadata"]["name"] = "m" * 76
    long_model["spec"]["vendor"] = "Moonshot AI, Inc."
    service = isvc(model={"name": "m" * 76})
    bundle = render_bundle(
        [
            ClusterBaseModel.model_validate(long_model),
            parse_runtime(runtime()),
            InferenceService.model_validate(service),
        ],
        SETTINGS,
        ["node-a"],
    )
    assert bundle.problems == []
    pairs = [pair for obj in bundle.objects for pair in labels_of(obj)]
    assert pairs
    bad = [(k, v) for k, v in pairs if len(v) > 63 or not LABEL_VALUE.match(v)]
    assert bad == []


def test_a_storage_edit_names_a_new_download_job() -> None:
    model = ClusterBaseModel.model_validate(MODEL)
    edited = copy.deepcopy(MODEL)
    edited["spec"]["storage"]["storageUri"] = "hf://meta-llama/Llama-3.1-8B@v2"
    jobs = [
        next(o["metadata"]["name"] for o in render_model(m, ["node-a"], SETTINGS) if o["kind"] == "Job")
        for m in (model, ClusterBaseModel.model_validate(edited))
    ]
    assert jobs[0] != jobs[1]
    invalid = copy.deepcopy(MODEL)
    invalid["spec"]["storage"]["storageUri"] = "oci://bucket/llama"  # not oci://n/<ns>/b/<bucket>/o/<prefix>
    assert render_model(ClusterBaseModel.model_validate(invalid), ["node-a"], SETTINGS) == []

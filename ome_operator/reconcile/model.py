"""Reconcile one ClusterBaseModel or BaseModel: a download Job per target node, node labels, status.

A node gets `models.ome.io/...=Ready` only after its Job succeeded, i.e. after every file was
verified in place; engine pods select on that label, so they never start beside a partial copy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from ome_operator.api import ClusterBaseModel
from ome_operator.api import reasons as R
from ome_operator.api.model import AnyModel
from ome_operator.api.reasons import Cond
from ome_operator.api.storage_uri import StorageUriError, is_in_place, parse_storage_uri
from ome_operator.kube.client import ApiException, Kube
from ome_operator.kube.errors import is_permanent, is_transient
from ome_operator.kube.resources import MODEL_CHILD_KINDS
from ome_operator.render import names
from ome_operator.render.context import Settings
from ome_operator.render.download import (
    ModelContext,
    check_model_storage,
    render_model,
)
from ome_operator.status.conditions import cond_message
from ome_operator.status.model import ModelFactsObserved, NodeDownload, compute_model_status

from .children import apply_children, list_children
from .download_policy import compute_retry_message, parse_time
from .events import record_event
from .model_downloads import (
    parse_model,
    read_termination_summary,
    resolve_held_nodes,
    resolve_retry_plans,
    resolve_reuse_sources,
)
from .nodes import apply_node_labels, resolve_target_nodes
from .refusals import BOOK, fingerprint_of
from .status import FieldError, describe_api_error, describe_exception, write_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOutcome:
    state: str
    phases: dict[str, int]
    label: str  # the ome.io/model label value, e.g. cluster.kimi-k2-instruct
    progress: dict[str, Obj]  # node -> the download Job's latest progress snapshot


Obj = dict[str, Any]
STATUS_ATTEMPTS = 3


def ready_label(model: AnyModel) -> str:
    return names.model_ready_label(model.name, None if isinstance(model, ClusterBaseModel) else model.namespace)


def job_phase(job: Obj | None) -> tuple[str, str]:
    """Succeeded / Failed (after the Job's own retries with backoff) / Running / Pending, and why."""
    if job is None:
        return "Pending", ""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "Succeeded", ""
        if cond.get("type") == "Failed":
            return "Failed", f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".strip(": ")
    if status.get("active"):
        return "Running", ""
    return "Pending", ""


def compute_metadata(summary: Obj) -> Obj:
    """Map the downloader's summary onto status.metadata (only facts, never credentials)."""
    found = summary.get("metadata")
    meta: Obj = found if isinstance(found, dict) else {}
    found_framework = meta.get("modelFramework")
    framework: Obj = found_framework if isinstance(found_framework, dict) else {}
    mapping = {
        "commit": summary.get("commit"),
        "architecture": meta.get("modelArchitecture"),
        "modelType": meta.get("modelType"),
        "parameterCount": meta.get("parameterCount"),
        "parameterSize": meta.get("modelParameterSize"),
        "dtype": meta.get("dtype"),
        "quantization": meta.get("quantization"),
        "maxTokens": meta.get("maxTokens"),
        "transformersVersion": framework.get("version") if framework.get("name") == "transformers" else None,
        "sizeBytes": summary.get("bytes"),
        "files": summary.get("files"),
    }
    return {k: v for k, v in mapping.items() if v is not None}


def compute_failure_message(summary: Obj | None, job_message: str) -> str:
    """The downloader's own error (from its termination message) first, then the Job's verdict."""
    error = (summary or {}).get("error")
    if not isinstance(error, str) or not error:
        return job_message
    kind = "permanent" if (summary or {}).get("permanent") else "retries exhausted"
    return f"{error} ({kind}; {job_message})" if job_message else error


def list_referencing_services(kube: Kube, model: AnyModel) -> list[str]:
    namespace = None if isinstance(model, ClusterBaseModel) else model.namespace
    result = []
    for isvc in kube.list("InferenceService", namespace):
        ref = (isvc.get("spec") or {}).get("model") or {}
        kind = ref.get("kind")
        if ref.get("name") == model.name and kind in (None, model.crd.kind):
            result.append(f"{isvc['metadata']['namespace']}/{isvc['metadata']['name']}")
    return sorted(result)


def list_cluster_models(kube: Kube, model: AnyModel) -> list[AnyModel]:
    """The ClusterBaseModels a BaseModel's directory must not overlap (the cache holds them all)."""
    if isinstance(model, ClusterBaseModel):
        return []
    found: list[AnyModel] = []
    for raw in kube.list("ClusterBaseModel"):
        try:
            found.append(ClusterBaseModel.model_validate(raw))
        except ValueError:
            continue  # its own reconcile reports it; an unreadable spec claims no directory
    return found


def in_place(model: AnyModel) -> bool:
    try:
        return model.spec.storage is not None and is_in_place(parse_storage_uri(model.spec.storage.storage_uri))
    except StorageUriError:
        return False


def describe_apply_refusal(exc: ApiException, settings: Settings, model: AnyModel) -> Cond:
    """A 4xx from the API server for a download object, as the condition that says what to change."""
    message = describe_api_error(exc)
    if exc.status == 404 and isinstance(model, ClusterBaseModel) and "namespaces" in message:
        namespace = settings.operator_namespace
        return Cond(
            R.DOWNLOADED,
            False,
            R.DOWNLOAD_NAMESPACE_MISSING,
            f'namespace "{namespace}" does not exist; create it or start the operator with --operator-namespace',
        )
    return Cond(R.DOWNLOADED, False, R.INVALID_STORAGE, f"the API server refused a download object: {message}", "spec")


def reconcile_model(
    kube: Kube, kind: str, namespace: str | None, name: str, settings: Settings, now: Callable[[], str]
) -> ModelOutcome | None:
    for attempt in range(STATUS_ATTEMPTS):
        raw = kube.get(kind, name, namespace, fresh=attempt > 0)  # after a lost race, not the cached copy
        key = (kind, namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            BOOK.clear(key)
            return None
        # Anything that fails the same way on the same input (a refusal, an AttributeError on an odd
        # node affinity) is a condition on the model and waits out a capped backoff, not a hot loop.
        print_ = fingerprint_of(raw["metadata"].get("uid"), raw["metadata"].get("generation"), raw.get("spec"))
        if BOOK.blocked(key, print_) is not None:
            return ModelOutcome("Failed", {}, "", {})
        try:
            outcome = reconcile_model_once(kube, raw, settings, now)
        except Exception as exc:
            if is_transient(exc):
                raise
            return report_model_failure(kube, raw, exc, print_, now)
        if outcome is not None:
            return outcome
    raise RuntimeError(f"{kind} {name}: status kept changing under us; retrying later")


def report_model_failure(kube: Kube, raw: Obj, exc: Exception, print_: str, now: Callable[[], str]) -> ModelOutcome:
    """The exception as Downloaded=False ReconcileFailed and one Warning Event per input."""
    meta = raw["metadata"]
    path, detail = describe_exception(exc)  # input stored before the CRD checked it names its field
    cond = Cond(R.DOWNLOADED, False, R.RECONCILE_FAILED, detail[:2000], path)
    if BOOK.record((raw["kind"], meta.get("namespace"), meta["name"]), print_, cond):
        expected = isinstance(exc, ApiException | pydantic.ValidationError | FieldError)
        log.error("%s %s: %s", raw["kind"], meta["name"], cond_message(cond), exc_info=None if expected else exc)
        record_event(kube, raw, "Warning", R.RECONCILE_FAILED, cond_message(cond))
    facts = ModelFactsObserved(generation=meta.get("generation"), nodes=[], problem=cond)
    try:
        write_status(kube, raw, compute_model_status(facts, raw.get("status"), now()))
    except Exception as status_exc:  # the status itself may be what cannot be written
        if is_transient(status_exc):
            raise
        log.error("%s %s: status not written: %s", raw["kind"], meta["name"], status_exc)
    return ModelOutcome("Failed", {}, "", {})


def reconcile_model_once(kube: Kube, raw: Obj, settings: Settings, now: Callable[[], str]) -> ModelOutcome | None:
    """One pass; None when the status write lost a race and the pass must be recomputed."""
    model = parse_model(raw)
    name = model.name
    mctx = ModelContext(model, settings)
    targets, all_nodes = resolve_target_nodes(kube, model)
    storage_problem = check_model_storage(model, settings, list_cluster_models(kube, model))
    problem: Cond | None = None
    if storage_problem is not None:
        path, _, message = storage_problem.partition(": ")
        problem = Cond(R.DOWNLOADED, False, R.INVALID_STORAGE, message, path)
        targets = []
    this_label = mctx.labels()[names.LABEL_MODEL]
    selector = f"{names.LABEL_MODEL}={this_label}"
    existing = list_children(kube, MODEL_CHILD_KINDS, mctx.namespace, selector)
    pods = kube.list("Pod", mctx.namespace, selector) if any(o["kind"] == "Job" for o in existing) else []
    clock = parse_time(now())
    try:
        reuse = resolve_reuse_sources(kube, mctx, targets, existing)
    except ApiException as exc:  # e.g. no right to list models cluster-wide: download, do not reuse
        if exc.status is None or exc.status >= 500:
            raise
        log.debug("model %s: no reuse candidates (%s)", name, exc.status)
        reuse = {}
    plans = resolve_retry_plans(mctx, targets, existing, pods, clock, reuse)
    try:
        held = resolve_held_nodes(kube, mctx, [n for n in targets if n not in plans], this_label)
    except ApiException as exc:  # without a cluster-wide view there is no queue to wait in
        if exc.status is None or exc.status >= 500:
            raise
        log.debug("model %s: download priority not applied (%s)", name, exc.status)
        held = {}
    attempts = {n: p.attempt for n, p in plans.items()}
    desired = (
        render_model(model, [n for n in targets if n not in held], settings, attempts, reuse) if problem is None else []
    )
    try:
        result = apply_children(kube, desired, existing, model.metadata.uid or "")
    except ApiException as exc:
        if not is_permanent(exc):
            raise  # transient: the work queue retries with backoff
        problem = describe_apply_refusal(exc, settings, model)
        meta = raw["metadata"]
        # The same refusal on the same input: later passes wait out the backoff (reconcile_model).
        if BOOK.record(
            (raw["kind"], meta.get("namespace"), meta["name"]),
            fingerprint_of(meta.get("uid"), meta.get("generation"), raw.get("spec")),
            problem,
        ):
            log.warning("%s %s: %s", model.crd.kind, name, problem.message)
            record_event(kube, raw, "Warning", problem.reason, problem.message)
        result = None
    if result is not None and (result.applied or result.pruned):
        log.info("model %s: applied %s pruned %s", name, result.applied, result.pruned)
    live = result.live if result is not None else {}
    jobs = {
        (o["metadata"].get("annotations") or {}).get("ome.io/node", ""): o for o in live.values() if o["kind"] == "Job"
    }
    progress_cm = next((o for o in live.values() if o["kind"] == "ConfigMap"), None)
    progress_data = (progress_cm or {}).get("data") or {}
    if result is not None and result.applied:
        pods = kube.list("Pod", mctx.namespace, selector) if jobs else []

    downloads = []
    metadata = None
    for node in targets:
        job = jobs.get(node)
        phase, message = job_phase(job)
        progress = None
        if node in progress_data:
            try:
                progress = json.loads(progress_data[node])
            except ValueError:
                progress = None
        if phase == "Succeeded" and metadata is None and job is not None:
            summary = read_termination_summary(pods, job["metadata"]["name"])
            metadata = compute_metadata(summary) if summary else None
        if phase == "Failed" and job is not None:
            message = compute_failure_message(read_termination_summary(pods, job["metadata"]["name"]), message)
        plan = plans.get(node)
        retrying = plan is not None and plan.due_at is not None and phase == "Failed"
        if retrying and plan is not None:
            message = f"{message}; {compute_retry_message(plan, clock)}"
        if node in held:
            message = held[node]
        downloads.append(NodeDownload(node, phase, message, progress, retry_scheduled=retrying))

    label = ready_label(model)
    wanted: dict[str, str | None] = {
        n.node: {"Succeeded": "Ready", "Failed": "Failed"}.get(n.phase, "Updating") for n in downloads
    }
    for existing_node in all_nodes:
        node_name = existing_node["metadata"]["name"]
        if node_name not in wanted and label in (existing_node["metadata"].get("labels") or {}):
            wanted[node_name] = None  # no longer a target: the copy there is not ours to vouch for
    apply_node_labels(kube, all_nodes, label, wanted)

    facts = ModelFactsObserved(
        generation=model.metadata.generation,
        nodes=downloads,
        metadata=metadata or ((raw.get("status") or {}).get("metadata")),
        spec_architecture=model.spec.model_architecture,
        spec_parameter_size=model.spec.model_parameter_size,
        in_place=in_place(model),
        referenced_by=list_referencing_services(kube, model),
        problem=problem,
    )
    status = compute_model_status(facts, raw.get("status"), now())
    if not write_status(kube, raw, status):
        return None
    phases: dict[str, int] = {}
    for download in downloads:
        phases[download.phase] = phases.get(download.phase, 0) + 1
    progress_by_node = {d.node: d.progress for d in downloads if d.progress}
    return ModelOutcome(str(status.get("state")), phases, mctx.labels()[names.LABEL_MODEL], progress_by_node)

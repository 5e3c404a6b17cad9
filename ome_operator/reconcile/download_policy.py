"""Download Jobs beyond one run: recreating a Job that used up its retries, and which Jobs go first.

**Recreation.** A download Job retries its pod `backoffLimit` times (the Job controller's own
exponential backoff), then fails. A failure the downloader calls permanent (exit code 3: bad URI,
no access, not a model) stays failed until the model's spec changes. Any other failure (hub down,
throttled, a node-level crash) is not the model's fault, so the Job is recreated after
`delay = base * 2^(attempt-1)` (capped) from the moment it failed, as attempt 2, 3, ...; the model's
Downloaded condition says when (reason DownloadRetryScheduled). Attempts are counted by name: attempt
k's Job is named from the same source plus `#attempt-k`, so the count survives operator restarts and
needs no state beyond the Jobs themselves.

**Priority** (as OME's model agent does since PR #838: serving demand first). A node runs at most
`download_slots_per_node` download Jobs at once. A model that an InferenceService references is
"demanded"; a Job for a model nobody serves yet is created on a node only while the node has a free
slot beyond one kept for demanded models, and never while a demanded model is waiting for that node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Obj = dict[str, Any]
MAX_ATTEMPTS = 50
MAX_DELAY_SECONDS = 1800.0
PERMANENT_REASONS = ("PodFailurePolicy",)  # the Job's FailJob rule on exit code 3


@dataclass(frozen=True)
class RetryPlan:
    attempt: int  # the attempt the node's Job should be now
    due_at: datetime | None = None  # when a failed attempt is recreated (None: not scheduled)
    previous_failure: str = ""


def compute_retry_delay(attempt: int, base_seconds: float) -> float:
    """Seconds between attempt `attempt` failing and attempt `attempt + 1` starting."""
    return float(min(base_seconds * 2 ** max(attempt - 1, 0), MAX_DELAY_SECONDS))


def failed_condition(job: Obj) -> Obj | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return dict(cond)
    return None


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def resolve_retry_plan(
    jobs_by_attempt: dict[int, Obj], permanent: bool, now: datetime, base_seconds: float
) -> RetryPlan:
    """What the node's Job should be, from the Jobs of this source that exist (attempt -> Job)."""
    if not jobs_by_attempt:
        return RetryPlan(1)
    attempt = max(jobs_by_attempt)
    job = jobs_by_attempt[attempt]
    failed = failed_condition(job)
    if failed is None or permanent or failed.get("reason") in PERMANENT_REASONS or attempt >= MAX_ATTEMPTS:
        return RetryPlan(attempt)
    failed_at = _parse_time(failed.get("lastTransitionTime")) or now
    due = failed_at + timedelta(seconds=compute_retry_delay(attempt, base_seconds))
    why = str(failed.get("reason") or "Failed")
    if now >= due:
        return RetryPlan(attempt + 1, None, why)
    return RetryPlan(attempt, due, why)


def compute_retry_message(plan: RetryPlan, now: datetime) -> str:
    assert plan.due_at is not None
    seconds = max(0, int((plan.due_at - now).total_seconds()))
    return (
        f"attempt {plan.attempt} used up its retries ({plan.previous_failure}); "
        f"the Job is recreated in {seconds} s as attempt {plan.attempt + 1}"
    )


def is_active(job: Obj) -> bool:
    status = job.get("status") or {}
    done = any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return not done


@dataclass(frozen=True)
class NodeQueue:
    """One node's download Jobs of every model, as the priority rule needs them."""

    active_demanded: int = 0
    active_other: int = 0
    demanded_waiting: bool = False  # a demanded model targets this node and has no Job there yet


def may_start(queue: NodeQueue, demanded: bool, slots: int) -> bool:
    """Whether a new Job for a (demanded or not) model may be created on the node now."""
    active = queue.active_demanded + queue.active_other
    if demanded:
        return active < slots
    # One slot stays free for serving demand, and demand waiting on the node goes first.
    return not queue.demanded_waiting and active < max(slots - 1, 1)


def parse_time(text: str) -> datetime:
    return _parse_time(text) or datetime.now(UTC)


def compute_demanded_labels(isvcs: list[Obj]) -> set[str]:
    """`ome.io/model` label values of the models some InferenceService serves (OME looks a model up
    in the service's namespace first, then among cluster models, so both count)."""
    from ome_operator.render import names

    labels = set()
    for isvc in isvcs:
        ref = (isvc.get("spec") or {}).get("model") or {}
        name, kind = ref.get("name"), ref.get("kind")
        if not name:
            continue
        if kind in (None, "BaseModel"):
            labels.add(names.label_value(f"{isvc['metadata']['namespace']}.{name}"))
        if kind in (None, "ClusterBaseModel"):
            labels.add(names.label_value(f"cluster.{name}"))
    return labels


def compute_node_queues(
    jobs: list[Obj], demanded: set[str], waiting_demand: dict[str, set[str]], this_label: str
) -> dict[str, NodeQueue]:
    """Per node: active download Jobs of other models (demanded or not), and whether a demanded model
    other than this one waits for the node (`waiting_demand`: node -> labels of such models)."""
    from ome_operator.render import names

    counts: dict[str, list[int]] = {}
    for job in jobs:
        label = (job["metadata"].get("labels") or {}).get(names.LABEL_MODEL, "")
        node = (job["metadata"].get("annotations") or {}).get("ome.io/node", "")
        if label == this_label or not node or not is_active(job):
            continue
        slot = counts.setdefault(node, [0, 0])
        slot[0 if label in demanded else 1] += 1
    nodes = set(counts) | set(waiting_demand)
    return {
        n: NodeQueue(
            active_demanded=counts.get(n, [0, 0])[0],
            active_other=counts.get(n, [0, 0])[1],
            demanded_waiting=bool(waiting_demand.get(n, set()) - {this_label}),
        )
        for n in nodes
    }

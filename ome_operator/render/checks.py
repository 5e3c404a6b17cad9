"""Checks on the merged components that keep a broken pod from being created. Pure.

Each check looks at what a pod would really get (runtime defaults merged with the InferenceService)
and returns conditions naming the field to change. Blocking problems become SpecValid=False; SGLang
flag findings become the advisory EngineArgsValid condition, which never blocks (OME's own Kimi K2
runtime passes a flag that current SGLang refuses, and its files must still apply and run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from ome_operator.api import limits
from ome_operator.api import reasons as R
from ome_operator.api.reasons import Cond

from . import engine_args
from .context import GPU_RESOURCE
from .merge import Obj
from .pods import role_runner

ROLES = ("leader", "worker")
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[munkMGTPE]i?|Ki)?$")
# resource.Quantity's grammar: a decimal number, then a binary (Ki..Ei), decimal (n..E) or exponent suffix.
_ANY_QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
# A label value: at most 63 characters, alphanumerics at both ends, '-', '_' and '.' between.
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def runner_paths(component_name: str, component: Obj) -> Iterator[tuple[str, Obj]]:
    """(field path, merged runner) for each pod role of a merged component."""
    multi = "leader" in component or "worker" in component
    if not multi:
        yield f"spec.{component_name}.runner", role_runner(component, None)
        return
    yield f"spec.{component_name}.leader.runner", role_runner(component, "leader")
    if int((component.get("worker") or {}).get("size") or 0) > 0:
        yield f"spec.{component_name}.worker.runner", role_runner(component, "worker")


def parse_gpu_count(value: object) -> int | None:
    """A GPU quantity as a whole number, or None when it is not one ("0.5", "abc", "8x")."""
    text = str(value).strip()
    if not _QUANTITY.match(text):
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None  # suffixed quantities (1k, 1Gi) are not GPU counts
    if number != number.to_integral_value() or number < 0:
        return None
    return int(number)


def check_gpus(path: str, runner: Obj) -> list[Cond]:
    resources = runner.get("resources") or {}
    requests = (resources.get("requests") or {}).get(GPU_RESOURCE)
    limits = (resources.get("limits") or {}).get(GPU_RESOURCE)
    problems = []
    for section, value in (("requests", requests), ("limits", limits)):
        if value is not None and parse_gpu_count(value) is None:
            problems.append(
                Cond(
                    R.SPEC_VALID,
                    False,
                    R.INVALID_GPU_REQUEST,
                    f"{GPU_RESOURCE} {section} {value!r} is not a whole number of GPUs",
                    f"{path}.resources.{section}",
                )
            )
    if problems:
        return problems
    if requests is not None and limits is not None and parse_gpu_count(requests) != parse_gpu_count(limits):
        return [
            Cond(
                R.SPEC_VALID,
                False,
                R.INVALID_GPU_REQUEST,
                f"{GPU_RESOURCE} requests {requests} differ from limits {limits}; Kubernetes needs them equal",
                f"{path}.resources",
            )
        ]
    return []


def check_sizes(name: str, component: Obj) -> list[Cond]:
    """Replica and group-size bounds, for objects admitted before the CRD enforced them."""
    problems = []
    bounds = (
        ("minReplicas", component.get("minReplicas"), limits.MAX_REPLICAS),
        ("maxReplicas", component.get("maxReplicas"), limits.MAX_REPLICAS),
        ("worker.size", (component.get("worker") or {}).get("size"), limits.MAX_WORKER_SIZE),
    )
    for field_name, value, maximum in bounds:
        if value is not None and not (isinstance(value, int) and 0 <= value <= maximum):
            problems.append(
                Cond(
                    R.SPEC_VALID, False, R.INVALID_SPEC, f"{value} is outside 0..{maximum}", f"spec.{name}.{field_name}"
                )
            )
    low, high = component.get("minReplicas"), component.get("maxReplicas")
    if isinstance(low, int) and isinstance(high, int) and not problems and low > high:
        problems.append(
            Cond(R.SPEC_VALID, False, R.INVALID_SPEC, f"minReplicas {low} exceeds maxReplicas {high}", f"spec.{name}")
        )
    return problems


def check_resources(path: str, runner: Obj) -> list[Cond]:
    """Every resource quantity parses (the API server answers "8x" or "20GiB" with a 500 otherwise)."""
    problems = []
    resources = runner.get("resources") or {}
    for section in ("requests", "limits"):
        for resource, value in sorted((resources.get(section) or {}).items()):
            if resource == GPU_RESOURCE:
                continue  # check_gpus says more: a GPU count must be whole
            if isinstance(value, bool) or not _ANY_QUANTITY.match(str(value).strip()):
                problems.append(
                    Cond(
                        R.SPEC_VALID,
                        False,
                        R.INVALID_SPEC,
                        f"{value!r} is not a quantity (a number with an optional suffix such as Ki, Mi, Gi, m or k)",
                        f"{path}.resources.{section}.{resource}",
                    )
                )
    return problems


def check_container_size(path: str, runner: Obj) -> list[Cond]:
    """Env entries unique and bounded, and a bounded command line (objects stored before the bounds)."""
    env = runner.get("env") or []
    if len(env) > limits.MAX_ENV:
        return [Cond(R.SPEC_VALID, False, R.INVALID_SPEC, f"{len(env)} entries exceed {limits.MAX_ENV}", f"{path}.env")]
    problems = []
    seen: set[str] = set()
    for index, entry in enumerate(env):
        name = str((entry or {}).get("name") or "") if isinstance(entry, dict) else ""
        if name in seen:
            problems.append(
                Cond(R.SPEC_VALID, False, R.INVALID_SPEC, f"duplicate env name {name!r}", f"{path}.env[{index}].name")
            )
        seen.add(name)
    argv = [str(a) for a in (runner.get("command") or [])] + [str(a) for a in (runner.get("args") or [])]
    size = sum(len(a.encode()) + 1 for a in argv)
    if size > limits.MAX_COMMAND_BYTES:
        problems.append(
            Cond(
                R.SPEC_VALID,
                False,
                R.INVALID_SPEC,
                f"command and args take {size} bytes, more than {limits.MAX_COMMAND_BYTES}",
                f"{path}.args",
            )
        )
    return problems


def check_declared_env(spec: Obj) -> list[Cond]:
    """Env names unique in each container the InferenceService declares.

    Merging with the runtime keys env by name, so a duplicate would silently keep only its last
    value; the CRD refuses duplicates, but an object stored before it did must be told, not guessed."""
    problems: list[Cond] = []
    for name in ("engine", "decoder", "router"):
        component = spec.get(name)
        if not isinstance(component, dict):
            continue
        for role in (None, "leader", "worker"):
            part = component if role is None else component.get(role)
            runner = part.get("runner") if isinstance(part, dict) else None
            if isinstance(runner, dict):
                path = f"spec.{name}.runner" if role is None else f"spec.{name}.{role}.runner"
                problems.extend(c for c in check_container_size(path, runner) if "duplicate" in c.message)
    return problems


def check_label_map(path: str, values: object, label: bool) -> list[Cond]:
    """Pod labels (name syntax and 63-character values) and annotation keys, as the API server checks them."""
    if not isinstance(values, dict):
        return []
    problems = []
    for key, value in sorted(values.items(), key=lambda kv: str(kv[0])):
        prefix, _, name = str(key).rpartition("/")
        if not _LABEL_NAME.match(name) or len(name) > 63 or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            problems.append(Cond(R.SPEC_VALID, False, R.INVALID_SPEC, f"{key!r} is not a valid key", f"{path}.{key}"))
        elif label and (len(str(value)) > 63 or not _LABEL_VALUE.match(str(value))):
            problems.append(
                Cond(
                    R.SPEC_VALID,
                    False,
                    R.INVALID_SPEC,
                    f"label value {str(value)[:80]!r} must be at most 63 characters of [A-Za-z0-9_.-], "
                    "alphanumeric at both ends",
                    f"{path}.{key}",
                )
            )
    return problems


def check_image(path: str, runner: Obj, runtime_name: str | None) -> list[Cond]:
    if runner.get("image"):
        return []
    source = f"runtime {runtime_name} sets none either" if runtime_name else "and no runtime supplies one"
    return [
        Cond(
            R.SPEC_VALID,
            False,
            R.CONTAINER_WITHOUT_IMAGE,
            f"container {runner.get('name')} has no image ({source})",
            f"{path}.image",
        )
    ]


def check_components(components: dict[str, Obj], runtime_name: str | None, has_decoder_config: bool) -> list[Cond]:
    """Blocking problems of the merged components (SpecValid=False), in a stable order."""
    problems: list[Cond] = []
    if "decoder" in components and not has_decoder_config and runtime_name is not None:
        problems.append(
            Cond(
                R.SPEC_VALID,
                False,
                R.RUNTIME_NOT_DISAGGREGATED,
                f"runtime {runtime_name} has no decoderConfig, so it is not a prefill-decode runtime; "
                "remove spec.decoder or use a PD runtime",
                "spec.decoder",
            )
        )
    if "decoder" in components and "router" not in components:
        problems.append(
            Cond(
                R.SPEC_VALID,
                False,
                R.ROUTER_REQUIRED,
                "engine (prefill) and decoder are declared without a router, so no request is paired "
                "across them; add spec.router",
                "spec.router",
            )
        )
    for name, component in components.items():
        sizes = check_sizes(name, component)
        problems.extend(sizes)
        if sizes:
            continue  # absurd sizes: nothing else of this component is worth looking at
        problems.extend(check_label_map(f"spec.{name}.labels", component.get("labels"), label=True))
        problems.extend(check_label_map(f"spec.{name}.annotations", component.get("annotations"), label=False))
        for path, runner in runner_paths(name, component):
            problems.extend(check_image(path, runner, runtime_name))
            problems.extend(check_gpus(path, runner))
            problems.extend(check_resources(path, runner))
            problems.extend(check_container_size(path, runner))
    return problems


def check_engine_flags(components: dict[str, Obj]) -> tuple[Cond | None, list[Cond]]:
    """EngineArgsValid, and one advisory line per refused flag naming every container that passes it.

    Each container is checked against the SGLang versions its image names (all known versions for
    an untagged, `latest` or `dev` image). Only refusals count: a deprecated flag still starts.
    """
    seen: dict[str, tuple[str, list[str]]] = {}  # message -> (flag, paths)
    checked = False
    for name in ("engine", "decoder"):
        if name not in components:
            continue
        for path, runner in runner_paths(name, components[name]):
            argv = [str(a) for a in (runner.get("command") or [])] + [str(a) for a in (runner.get("args") or [])]
            if engine_args.find_command(argv, engine_args.container_env(runner)) is None:
                continue
            checked = True
            for finding in engine_args.check_engine_container(runner):
                if finding.kind in engine_args.REFUSALS:
                    seen.setdefault(finding.message, (finding.flag, []))[1].append(path)
    if not checked:
        return None, []
    if not seen:
        accepted = Cond(R.ENGINE_ARGS_VALID, True, R.ENGINE_ARGS_ACCEPTED, "every SGLang flag is accepted")
        return accepted, []
    lines = [
        Cond(R.ENGINE_ARGS_VALID, False, R.ENGINE_ARGS_REFUSED, message, ", ".join(paths))
        for message, (_, paths) in seen.items()
    ]
    summary = "; ".join(f"{paths[0].split('.')[1]}: {message}" for message, (_, paths) in seen.items())
    return Cond(R.ENGINE_ARGS_VALID, False, R.ENGINE_ARGS_REFUSED, summary), lines

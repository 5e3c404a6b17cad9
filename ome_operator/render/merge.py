"""Merging a runtime's component defaults with an InferenceService's component (OME §2.3).

Everything here works on plain camelCase mappings as written in YAML, so fields we do not model
(any PodSpec or Container field) merge and survive too. The InferenceService wins on scalars;
maps merge by key; env, volumes, volumeMounts and ports merge by name; args are concatenated;
tolerations are concatenated without duplicates.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]

# Lists merged by a key (later entry with the same key replaces the earlier one in place).
_KEYED_LISTS = {
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "containers": "name",
    "initContainers": "name",
    "imagePullSecrets": "name",
}
# Maps merged key by key.
_MAPS = {"nodeSelector", "labels", "annotations", "config", "requests", "limits"}
# Nested objects merged field by field.
_OBJECTS = {"runner", "leader", "worker", "resources"}


def merge_keyed(base: list[Any], override: list[Any], key: str) -> list[Any]:
    result = [copy.deepcopy(item) for item in base]
    index = {item.get(key): i for i, item in enumerate(result) if isinstance(item, Mapping)}
    for item in override:
        k = item.get(key) if isinstance(item, Mapping) else None
        if k is not None and k in index:
            merged = merge_objects(result[index[k]], item)
            result[index[k]] = merged
        else:
            index[k] = len(result)
            result.append(copy.deepcopy(item))
    return result


def merge_objects(base: Mapping[str, Any], override: Mapping[str, Any]) -> Obj:
    """Merge two component, pod or container mappings; `override` wins."""
    result: Obj = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            continue
        old = result.get(key)
        if old is None:
            result[key] = copy.deepcopy(value)
        elif key == "args":
            result[key] = [*old, *value]
        elif key == "tolerations":
            result[key] = [*old, *(t for t in value if t not in old)]
        elif key in _KEYED_LISTS and isinstance(old, list) and isinstance(value, list):
            result[key] = merge_keyed(old, value, _KEYED_LISTS[key])
        elif key in _MAPS and isinstance(old, Mapping) and isinstance(value, Mapping):
            result[key] = {**old, **value}
        elif key in _OBJECTS and isinstance(old, Mapping) and isinstance(value, Mapping):
            result[key] = merge_objects(old, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def merge_component(runtime_config: Mapping[str, Any] | None, isvc_component: Mapping[str, Any]) -> Obj:
    """The effective component: runtime defaults overridden by the InferenceService."""
    return merge_objects(runtime_config or {}, isvc_component)


def merge_container(base: Mapping[str, Any] | None, override: Mapping[str, Any] | None) -> Obj:
    return merge_objects(base or {}, override or {})

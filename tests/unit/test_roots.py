"""Model roots: which host paths a model may use, and that a refused one yields nothing but a reason."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from ome_operator.api import InferenceService
from ome_operator.api import reasons as R
from ome_operator.api.model import AnyModel, BaseModel, ClusterBaseModel
from ome_operator.render.context import ModelRefResolved, Settings
from ome_operator.render.download import check_model_storage, render_model
from ome_operator.render.resolve import resolve
from ome_operator.render.roots import (
    add_model_root_arguments,
    check_host_path,
    resolve_model_root_settings,
    validate_model_roots,
)

ROOTS = ("/raid/models", "/mnt/models")


def model(path: str | None = None, namespace: str | None = None, uri: str = "hf://org/model") -> AnyModel:
    storage: dict[str, Any] = {"storageUri": uri, **({"path": path} if path else {})}
    meta: dict[str, Any] = {"name": "m", **({"namespace": namespace} if namespace else {})}
    kind = BaseModel if namespace else ClusterBaseModel
    return kind.model_validate({"metadata": meta, "spec": {"storage": storage}})


@pytest.mark.parametrize(
    ("path", "namespace", "allowed"),
    [
        ("/raid/models/moonshotai/Kimi-K2-Instruct", None, True),  # OME's reference, unchanged
        ("/mnt/models/x", None, True),
        ("/etc", None, False),
        ("/raid/models", None, False),  # the root itself
        ("/raid/models-x/m", None, False),  # a look-alike prefix
        ("/raid", None, False),
        ("/raid/models/team-a/m", "team-a", True),
        ("/mnt/models/team-a/deep/m", "team-a", True),
        ("/raid/models/team-a", "team-a", False),  # the namespace's directory itself
        ("/raid/models/team-b/m", "team-a", False),
        ("/raid/models/m", "team-a", False),
    ],
)
def test_check_host_path(path: str, namespace: str | None, allowed: bool) -> None:
    problem = check_host_path(model(path, namespace), path, ROOTS, "{namespace}")
    assert (problem is None) == allowed, problem
    if problem is not None:
        assert problem.startswith("spec.storage.path: ") and "/raid/models" in problem


def test_an_empty_namespace_dir_confines_basemodels_to_the_roots_only() -> None:
    assert check_host_path(model("/raid/models/m", "team-a"), "/raid/models/m", ROOTS, "") is None
    tenants = check_host_path(model("/raid/models/team-a/m", "team-a"), "/raid/models/team-a/m", ROOTS, "t/{namespace}")
    assert tenants is not None and "/raid/models/t/team-a/" in tenants


@pytest.mark.parametrize(
    ("roots", "namespace_dir", "error"),
    [
        ((), "{namespace}", "at least one"),
        (("/",), "{namespace}", "other than '/'"),
        (("/raid/models/",), "{namespace}", "normalized"),
        (("raid/models",), "{namespace}", "normalized"),
        (("/raid", "/raid/models"), "{namespace}", "inside"),
        (ROOTS, "../{namespace}", "relative path"),
        (ROOTS, "/{namespace}", "relative path"),
        (ROOTS, "{name}", "relative path"),
    ],
)
def test_settings_that_would_confine_nothing_are_refused(
    roots: tuple[str, ...], namespace_dir: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        validate_model_roots(roots, namespace_dir)


def test_flags_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*argv: str) -> dict[str, Any]:
        parser = argparse.ArgumentParser()
        add_model_root_arguments(parser)
        return resolve_model_root_settings(parser.parse_args(list(argv)))

    assert parse() == {"model_roots": ROOTS, "namespace_model_dir": "{namespace}"}
    assert parse("--model-root=/data/m", "--namespace-model-dir=")["model_roots"] == ("/data/m",)
    monkeypatch.setenv("OME_MODEL_ROOTS", "/a/b,/c/d")
    assert parse()["model_roots"] == ("/a/b", "/c/d")


def test_default_paths_are_inside_the_first_root() -> None:
    settings = Settings()
    assert ModelRefResolved.of(model(), settings).path == "/raid/models/_cluster/m"
    assert ModelRefResolved.of(model(namespace="team-a"), settings).path == "/raid/models/team-a/m"
    assert check_model_storage(model(), settings) is None
    assert check_model_storage(model(namespace="team-a"), settings) is None


@pytest.mark.parametrize("refused", [model("/etc"), model(uri="local:///etc"), model("/raid/models/b/m", "team-a")])
def test_a_refused_path_renders_nothing_for_the_model_or_its_services(refused: AnyModel) -> None:
    settings = Settings()
    assert render_model(refused, ["node-1"], settings) == []
    isvc = InferenceService.model_validate(
        {
            "metadata": {"name": "svc", "namespace": refused.namespace or "team-a"},
            "spec": {"model": {"name": "m"}, "engine": {"minReplicas": 1}},
        }
    )
    resolved = resolve(isvc, [refused], [], settings)
    assert resolved.ctx is None
    assert resolved.model_cond.status is False and resolved.model_cond.reason == R.INVALID_STORAGE
    assert "outside the allowed model roots" in resolved.model_cond.message


def test_a_claim_of_another_namespace_is_not_mounted() -> None:
    claim = model(uri="pvc://other:store/m")
    isvc = InferenceService.model_validate(
        {"metadata": {"name": "svc", "namespace": "team-a"}, "spec": {"model": {"name": "m"}, "engine": {}}}
    )
    resolved = resolve(isvc, [claim], [], Settings())
    assert resolved.model_cond.reason == R.INVALID_STORAGE and "namespace other" in resolved.model_cond.message


def test_a_basemodel_may_not_overlap_a_cluster_models_directory() -> None:
    settings = Settings()
    kimi = ClusterBaseModel.model_validate(
        {
            "metadata": {"name": "kimi"},
            "spec": {
                "storage": {"storageUri": "hf://moonshotai/Kimi-K2-Instruct", "path": "/raid/models/moonshotai/k2"}
            },
        }
    )
    for path in ("/raid/models/moonshotai/k2", "/raid/models/moonshotai/k2/sub", "/raid/models/moonshotai/x"):
        squatter = model(path, "moonshotai")
        problem = check_model_storage(squatter, settings, [kimi])
        if path.endswith("/x"):
            assert problem is None
            continue
        assert problem is not None and "ClusterBaseModel kimi" in problem, problem
        assert render_model(squatter, ["node-1"], settings) != []  # alone, the path is fine
    above = model("/raid/models/moonshotai/k", "moonshotai")
    assert check_model_storage(above, settings, [kimi]) is None  # a look-alike prefix is no overlap
    # The cluster model itself is never refused for a namespace's models.
    assert check_model_storage(kimi, settings, [model("/raid/models/moonshotai/k2", "moonshotai")]) is None


def test_a_refused_cluster_model_claims_no_directory() -> None:
    settings = Settings()
    whole_root = model("/raid/models")  # refused itself: the root
    assert check_model_storage(whole_root, settings) is not None
    assert check_model_storage(model("/raid/models/team-a/m", "team-a"), settings, [whole_root]) is None

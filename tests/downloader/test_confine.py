"""A download never leaves its model root: `ome-operator download --confine-root` and the Job's
init container (`python3 -m ome_operator.downloader.confine`) run for real on a temporary model
root holding symlinks; no cluster and, for the refusals, no hub (they happen before any request).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.fixtures import FixtureRepo
from devtools.hub import Hub
from ome_operator.downloader.confine import ConfinementError, prepare_model_dir, resolve_confined_dest

from .conftest import REPO_ROOT, run_download

UNREACHABLE = "http://127.0.0.1:9"  # discard port: a refusal must come before any request


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Path, Path]:
    """A model root with a namespace directory, and a directory outside it standing for /etc."""
    root, outside = tmp_path / "models", tmp_path / "etc"
    (root / "team-a").mkdir(parents=True)
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    return root, outside


def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root: Path, dest: str) -> str:
    outcome = run_download(
        monkeypatch, tmp_path, UNREACHABLE, "hf://org/model", "--dest", dest, "--confine-root", str(root)
    )
    assert outcome.code == 3, outcome.log  # permanent: the Job's podFailurePolicy stops retrying
    assert outcome.termination is not None and outcome.termination["permanent"] is True
    return str(outcome.termination["error"])


def test_a_symlinked_directory_on_the_way_is_refused_and_nothing_is_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, disk: tuple[Path, Path]
) -> None:
    root, outside = disk
    (root / "team-a" / "escape").symlink_to(outside)
    before_root, before_outside = tree(root), tree(outside)
    error = refused(monkeypatch, tmp_path, root, f"{root}/team-a/escape/model")
    assert f"{root}/team-a/escape is a symlink" in error
    assert tree(root) == before_root and tree(outside) == before_outside


def test_a_symlink_as_the_model_directory_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, disk: tuple[Path, Path]
) -> None:
    root, outside = disk
    (root / "team-a" / "model").symlink_to(outside)
    error = refused(monkeypatch, tmp_path, root, f"{root}/team-a/model")
    assert "symlink" in error
    assert tree(outside) == ["passwd"]


def test_a_symlink_inside_the_model_directory_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, disk: tuple[Path, Path]
) -> None:
    root, outside = disk
    model = root / "team-a" / "model"
    model.mkdir()
    (model / "config.json").symlink_to(outside / "passwd")
    error = refused(monkeypatch, tmp_path, root, str(model))
    assert "holds symlinks" in error and "config.json" in error
    assert (outside / "passwd").read_text() == "root:x:0:0\n"


@pytest.mark.parametrize(
    "dest",
    ["/etc", "/", "{root}/../etc", "{root}/team-a/../../etc", "{root}", "{root}-evil/model"],
)
def test_paths_outside_the_root_are_refused_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, disk: tuple[Path, Path], dest: str
) -> None:
    root, _ = disk
    before = tree(tmp_path)
    error = refused(monkeypatch, tmp_path, root, dest.format(root=root))
    assert "model root" in error or "normalized" in error, error
    created = set(tree(tmp_path)) - set(before)
    assert all(p.startswith("termination-") for p in created), created


def prepare(root: Path, path: str) -> subprocess.CompletedProcess[str]:
    """The init container's command, as the Job runs it (the owner is ours: no CAP_CHOWN here)."""
    owner = f"{os.getuid()}:{os.getgid()}"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ome_operator.downloader.confine",
            "--root",
            str(root),
            "--path",
            path,
            "--owner",
            owner,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_init_container_creates_and_chowns_only_the_models_directory(disk: tuple[Path, Path]) -> None:
    root, _ = disk
    target = root / "team-a" / "org" / "model"
    proc = prepare(root, str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.is_dir()
    # The directory in between is created plainly (0755, never handed to the download user).
    assert (root / "team-a" / "org").stat().st_mode & 0o777 == 0o755


def test_the_init_container_refuses_a_symlink_and_changes_nothing(disk: tuple[Path, Path]) -> None:
    root, outside = disk
    (root / "team-a" / "escape").symlink_to(outside)
    mode = outside.stat().st_mode
    proc = prepare(root, f"{root}/team-a/escape")
    assert proc.returncode == 3 and "symlink" in proc.stderr, proc.stderr
    assert outside.stat().st_mode == mode and tree(outside) == ["passwd"]


def test_prepare_refuses_a_file_where_a_directory_belongs(disk: tuple[Path, Path]) -> None:
    root, _ = disk
    (root / "team-a" / "file").write_text("x")
    with pytest.raises(ConfinementError, match="not a directory"):
        prepare_model_dir(str(root), f"{root}/team-a/file/model", os.getuid(), os.getgid())
    assert not (root / "team-a" / "model").exists()


def test_a_clean_destination_is_created_and_returned(disk: tuple[Path, Path]) -> None:
    root, _ = disk
    dest = root / "team-a" / "model"
    assert resolve_confined_dest(str(root), dest) == dest
    assert dest.is_dir()


def test_a_confined_download_still_completes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hub: Hub, tiny_repo: FixtureRepo, disk: tuple[Path, Path]
) -> None:
    root, _ = disk
    dest = root / "team-a" / "tiny"
    outcome = run_download(
        monkeypatch,
        tmp_path,
        hub.endpoint,
        f"hf://{tiny_repo.repo_id}",
        "--dest",
        str(dest),
        "--confine-root",
        str(root),
    )
    assert outcome.code == 0, outcome.log
    assert (dest / "config.json").is_file()

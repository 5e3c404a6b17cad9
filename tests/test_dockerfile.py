"""The image, as far as it can be checked without a container engine.

The Dockerfile is parsed and held to what the chart and the download Jobs rely on (a numeric
non-root user with the Jobs' UID, `ome-operator` as entrypoint, the wheel built in a first stage
and installed in the second); the build context .dockerignore lets through is exactly what the
build stage copies; and the wheel built from that context alone installs into a fresh virtualenv
whose `ome-operator` runs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from ome_operator.render.download import DOWNLOAD_USER

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command, _, args = (pending + line).partition(" ")
        result.append((command.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def build_args() -> dict[str, str]:
    args = {}
    for command, rest in instructions():
        if command == "FROM":
            break
        if command == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def test_two_stages_on_a_slim_python_311_base() -> None:
    build, final = stages()
    base = build_args()["PYTHON_IMAGE"]
    assert base.startswith("python:3.11") and "slim" in base, base
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")


def test_first_stage_builds_only_our_wheel_and_the_second_installs_it() -> None:
    build, final = stages()
    runs = [rest for command, rest in build if command == "RUN"]
    assert len(runs) == 1 and runs[0].startswith("pip wheel") and "--no-deps" in runs[0].split(), runs
    copies = [rest for command, rest in final if command == "COPY"]
    assert copies == ["--from=build /wheels/ /wheels/"], copies
    installs = [rest for command, rest in final if command == "RUN" and rest.startswith("pip install")]
    assert installs and "/wheels/*.whl" in installs[0], installs


def test_runs_as_the_numeric_non_root_user_of_the_download_jobs_and_the_chart() -> None:
    _, final = stages()
    users = [rest for command, rest in final if command == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    # Kubernetes can enforce runAsNonRoot only for a numeric user.
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), users[0]
    assert int(uid) == DOWNLOAD_USER
    values = yaml.safe_load((REPO / "charts" / "ome-resources" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    # The user is created before it is switched to, so the UID has a passwd entry (getpass works).
    created = [rest for command, rest in final if command == "RUN" and "useradd" in rest]
    assert created and f"--uid {uid}" in created[0]
    # Installing needs root; everything after the switch (nothing but the entrypoint) runs as the user.
    after = [command for command, _ in final[final.index(("USER", users[0])) + 1 :]]
    assert "RUN" not in after and "ENTRYPOINT" in after, after


def test_entrypoint_is_the_console_script() -> None:
    _, final = stages()
    entrypoint = [json.loads(rest) for command, rest in final if command == "ENTRYPOINT"]
    assert entrypoint == [["ome-operator"]]  # exec form: signals reach the operator, not a shell
    cmd = [json.loads(rest) for command, rest in final if command == "CMD"]
    assert cmd == [["run"]]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ome-operator"] == "ome_operator.cli:main"


def ignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def in_context(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            included = negated
    return included


def context_files() -> list[str]:
    """Files the build context holds; tracked or not, as `docker build` would see the tree."""
    patterns = ignore_patterns()
    files = []
    for root, dirs, names in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        # .git and the virtualenv are big; they are checked to be excluded below.
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        for name in names:
            relative = name if rel_root == "." else f"{rel_root}/{name}"
            if in_context(relative, patterns):
                files.append(relative)
    return sorted(files)


def test_build_context_is_what_the_build_stage_copies() -> None:
    build, _ = stages()
    sources = [shlex.split(rest)[:-1] for command, rest in build if command == "COPY"]
    copied = sorted(src for group in sources for src in group)
    assert copied == ["README.md", "ome_operator", "pyproject.toml"]
    files = context_files()
    assert {"pyproject.toml", "README.md", "ome_operator/cli.py", "ome_operator/render/sglang_flags.json"} <= set(files)
    outside = [f for f in files if f not in ("pyproject.toml", "README.md") and not f.startswith("ome_operator/")]
    assert not outside, f"in the build context but never copied: {outside[:10]}"
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    patterns = ignore_patterns()
    for excluded in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "charts/ome-crd/Chart.yaml"):
        assert not in_context(excluded, patterns), excluded


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the build stage makes, built the same way from a copy of the same context (so the
    source tree gets no build/ directory and the context is proven sufficient)."""
    tmp = tmp_path_factory.mktemp("image")
    context = tmp / "context"
    for relative in context_files():
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    wheels = tmp / "wheels"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-cache-dir",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(wheels),
            ".",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = wheels.glob("ome_operator-*.whl")
    return built


def test_wheel_holds_the_package_and_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "ome_operator/cli.py",
        "ome_operator/py.typed",
        "ome_operator/render/sglang_flags.json",
        "ome_operator/render/sglang_router_flags.json",
        "ome_operator/downloader/main.py",
        "ome_operator/handlers/run.py",
    ):
        assert required in names, required
    distribution = "-".join(wheel.name.split("-")[:2])  # ome_operator-0.1.0
    # Nothing but the package: no tests, devtools or bench.
    assert {name.split("/")[0] for name in names} == {"ome_operator", f"{distribution}.dist-info"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ome-operator = ome_operator.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # The dependencies come from the project's virtualenv (appended after the new venv's own
    # site-packages, and without its .pth files, so the editable checkout stays out): installing them
    # from the index again would only test the index.
    (site / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet"]
    subprocess.run([*install, "--no-deps", str(wheel)], check=True, timeout=120, capture_output=True)
    script = venv / "bin" / "ome-operator"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str) -> str:
        proc = subprocess.run(
            [str(script), *args], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=env
        )
        assert proc.returncode == 0, f"ome-operator {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    assert "run" in run("--help") and "download" in run("--help")
    assert "--peering" in run("run", "--help")
    assert "--progress-configmap" in run("download", "--help")
    assert run("version").strip().endswith("0.1.0")
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ome_operator, sys; print(ome_operator.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    ).stdout.strip()
    # The code that ran is the wheel's, not the checkout's.
    assert Path(located).is_relative_to(site), located

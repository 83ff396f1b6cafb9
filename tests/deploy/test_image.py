"""The container recipe, without a Docker engine: the Dockerfile's structure, its entrypoint, and
``docker/install.sh`` run for real into a fresh virtual environment (the CPU image's /opt/venv).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
INSTALL = REPO / "docker" / "install.sh"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
FORBIDDEN = ("torch", "torchvision", "triton")  # what the CPU image must not carry
CPU_VENV_LIMIT_MB = 600  # measured 516 MB, numba and llvmlite 208 of them; torch alone would add gigabytes


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """Stages with their instructions (continuation lines joined, comments dropped)."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    stages: list[Stage] = []
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), flags=re.IGNORECASE)
            assert match, f"cannot read FROM {args!r}"
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=match.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, " ".join(args.split())))
    return stages


def build_context_sources(stage: Stage) -> list[str]:
    """The paths the stage COPYs from the build context (not from other stages or contexts)."""
    sources: list[str] = []
    for args in stage.all("COPY"):
        words = [w for w in args.split() if not w.startswith("--")]
        if "--from=" in args:
            continue
        sources.extend(words[:-1])
    return sources


def dockerignore_allows(relative: str) -> bool:
    """Whether .dockerignore (last matching pattern wins, ``!`` re-includes) lets ``relative`` in."""
    allowed = True
    for pattern in (REPO / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in relative.split("/"))
        else:
            hit = fnmatch.fnmatch(relative, pattern) or relative.startswith(pattern + "/")
        if hit:
            allowed = negate
    return allowed


# -- the Dockerfile ------------------------------------------------------------


def test_dockerfile_stages_and_default_target() -> None:
    stages = {stage.name: stage for stage in parse_dockerfile()}
    assert {"base-cpu", "base-gpu", "base", "build", "app", "bundle-image", "bundled", "runtime"} <= set(stages)
    assert parse_dockerfile()[-1].name == "runtime", "the last stage is what a plain `docker build` produces"
    assert stages["base"].base == "base-${VARIANT}"
    assert stages["base-cpu"].base == "${PYTHON_IMAGE}" and stages["base-gpu"].base == "${CUDA_IMAGE}"
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, flags=re.MULTILINE)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-", text, flags=re.MULTILINE)
    # The CUDA major of the base and of PyPI's onnxruntime-gpu build must agree: >=1.28 are the CUDA 13 builds.
    assert "onnxruntime-gpu>=1.28,<2" in INSTALL.read_text()


def test_build_stage_runs_install_script_on_copied_sources_only() -> None:
    build = {stage.name: stage for stage in parse_dockerfile()}["build"]
    assert any("deepminer-install" in run for run in build.all("RUN"))
    sources = build_context_sources(build)
    assert "docker/install.sh" in sources
    for source in sources:
        matches = list(REPO.glob(source))
        if "[" not in source:  # README.m[d] may match nothing by design
            assert matches, f"COPY {source}: no such path"
        for match in matches:
            assert dockerignore_allows(str(match.relative_to(REPO))), f"{source} is excluded by .dockerignore"
    for excluded in (".venv/bin/python", "bundles/demo/meta.json", "tests/conftest.py", "deepminer.db"):
        assert not dockerignore_allows(excluded), excluded


def test_runtime_is_non_root_with_healthcheck_entrypoint_and_bundle_path() -> None:
    app = {stage.name: stage for stage in parse_dockerfile()}["app"]
    (user,) = app.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    (healthcheck,) = app.all("HEALTHCHECK")
    assert "/usr/local/lib/deepminer/healthcheck.py" in healthcheck and "--start-period=" in healthcheck
    assert app.all("ENTRYPOINT") == ['["deepminer-entrypoint"]'] and app.all("CMD") == ['["serve"]']
    env = " ".join(app.all("ENV"))
    assert "DEEPMINER_BUNDLE=/models/bundle" in env and "DEEPMINER_HOST=0.0.0.0" in env
    copies = " ".join(app.all("COPY"))
    assert "docker/entrypoint.sh /usr/local/bin/deepminer-entrypoint" in copies
    assert "docker/healthcheck.py /usr/local/lib/deepminer/healthcheck.py" in copies
    assert "--from=build /opt/venv /opt/venv" in copies
    # It exposes the ports its two servers listen on by default: the API, the listener's DICOM and metrics ports.
    from service.dimse.settings import DimseSettings
    from service.settings import Settings

    dimse = DimseSettings.model_fields
    defaults = {Settings.model_fields["port"].default, dimse["port"].default, dimse["metrics_port"].default}
    assert {int(port) for line in app.all("EXPOSE") for port in line.split()} == defaults


def test_bundle_stages_copy_from_a_named_context() -> None:
    stages = {stage.name: stage for stage in parse_dockerfile()}
    assert stages["bundled"].base == "app"
    for name in ("bundled", "bundle-image"):
        assert "--from=bundle . /models/bundle/" in stages[name].all("COPY")


# -- the scripts -----------------------------------------------------------------


def test_shell_scripts_parse_and_are_executable() -> None:
    for script in (INSTALL, ENTRYPOINT):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        subprocess.run(["sh", "-n", str(script)], check=True)
    usage = subprocess.run(["sh", str(INSTALL)], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage: install.sh" in usage.stderr
    bad = subprocess.run(
        ["sh", str(INSTALL), "--variant", "tpu", "a", "b"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "got 'tpu'" in bad.stderr


def _entrypoint(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # `python` on PATH is this interpreter, as /opt/venv/bin comes first in the image.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={**os.environ, **env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_entrypoint_migrates_from_the_environment_and_passes_other_commands(tmp_path: Path) -> None:
    env = {"DEEPMINER_DATABASE_URL": f"sqlite:///{tmp_path / 'labels.db'}"}
    migrated = _entrypoint("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == "database at revision 0001 (head)"
    assert _entrypoint("migrate", "--current", env=env).stdout.strip() == "database at revision 0001 (head)"
    passed = _entrypoint("python", "-c", "print('as given')", env=env)
    assert passed.stdout.strip() == "as given"
    # `dimse` starts the DICOM listener, which names the variable it lacks before it listens.
    listener = _entrypoint("dimse", env=env)
    assert listener.returncode == 2, listener.stderr[-2000:]
    assert listener.stderr == "invalid configuration:\n  DEEPMINER_DIMSE_ALLOWED_CALLING_AE_TITLES: Field required\n"
    served = _entrypoint("serve", env={**env, "DEEPMINER_BACKEND": "nope"})
    assert served.returncode == 2 and served.stderr.startswith("invalid configuration:\n  DEEPMINER_BACKEND: ")


# -- install.sh for real -----------------------------------------------------------


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docker/install.sh (CPU variant) run on a copy of exactly the sources the Dockerfile copies."""
    root = tmp_path_factory.mktemp("image")
    src, venv = root / "src", root / "venv"
    src.mkdir()
    build = {stage.name: stage for stage in parse_dockerfile()}["build"]
    for source in build_context_sources(build):
        for match in REPO.glob(source):
            target = src / match.relative_to(REPO)
            if match.is_dir():
                shutil.copytree(match, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(match, target)
    result = subprocess.run(
        ["sh", str(INSTALL), str(src), str(venv)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"install.sh failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    assert "install.sh: ok: onnxruntime" in result.stdout
    return venv


@pytest.mark.slow
def test_cpu_image_environment_has_the_service_and_no_torch(image_venv: Path) -> None:
    python = image_venv / "bin" / "python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            f"import importlib.util as u, service.main; print([m for m in {FORBIDDEN} if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    assert "onnxruntime==" in listed and "alembic==" in listed
    assert not re.search(r"^(torch|torchvision|nvidia-[^=]*)==", listed, flags=re.MULTILINE)
    size_mb = sum(f.stat().st_size for f in image_venv.rglob("*") if f.is_file()) / 2**20
    print(f"CPU image venv: {size_mb:.0f} MB")
    assert size_mb < CPU_VENV_LIMIT_MB


@pytest.mark.slow
def test_cpu_image_environment_serves_a_bundle_and_migrates(
    image_venv: Path, tiny_bundle: Path, start_live_server: Any, tmp_path: Path
) -> None:
    python = image_venv / "bin" / "python"
    server = start_live_server(python=python, bundle=tiny_bundle)
    ready = httpx.get(f"{server.base_url}/readyz", timeout=10.0)
    assert ready.status_code == 200
    model = ready.json()["model"]
    assert (model["backend"], model["provider"]) == ("onnx", "CPUExecutionProvider")
    check = subprocess.run(
        [str(python), str(HEALTHCHECK), f"{server.base_url}/readyz"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    migrated = subprocess.run(
        [str(python), "-m", "annotations", "--db", f"sqlite:///{tmp_path / 'store.db'}", "migrate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.stdout.strip() == "database at revision 0001 (head)", migrated.stderr

"""scripts/setup.sh keeps one environment: extras are only added, so switching scripts reinstalls nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A stand-in interpreter inside the venv: it records each pip command instead of installing.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls"
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def setup(venv: Path, extras: str, torch: str = "torch==2.14.1 torchvision==0.29.1") -> list[str]:
    """Run setup.sh for ``extras`` and the ``torch`` pair; the pip commands it ran."""
    calls = venv / "calls"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "VENV": str(venv), "EXTRAS": extras, "TORCH_SPEC": torch}
    env["PYTHON"] = shutil.which("python3") or "python3"
    subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=env, check=True, capture_output=True)
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path / "venv"


def test_switching_scripts_installs_once(venv: Path) -> None:
    first = setup(venv, "all,deploy-test,bench")  # scripts/test.sh
    assert first[-1] == "-m pip install -q -e .[all,bench,deploy-test]"
    assert "-m pip install -q torch==2.14.1 torchvision==0.29.1" in first
    assert setup(venv, "all") == []  # scripts/serve.sh
    assert setup(venv, "all,bench") == []  # scripts/bench.sh
    assert setup(venv, " bench , all ") == []


def test_a_new_extra_installs_the_union(venv: Path) -> None:
    setup(venv, "all")
    assert setup(venv, "all,bench")[-1] == "-m pip install -q -e .[all,bench]"
    assert setup(venv, "all") == []


def test_another_torch_pair_reinstalls_what_was_there(venv: Path) -> None:
    setup(venv, "all,bench")
    assert setup(venv, "all") == []
    calls = setup(venv, "all", torch="torch==2.13.0 torchvision==0.28.0")
    assert "-m pip install -q torch==2.13.0 torchvision==0.28.0" in calls
    assert calls[-1] == "-m pip install -q -e .[all,bench]"

"""The code base stays ruff-clean (configuration in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff")
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    try:
        proc = subprocess.run(
            [*cmd, "check", "auq", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True
        )
    except FileNotFoundError:  # pragma: no cover
        pytest.skip("ruff is not installed (it is part of the dev extra)")
    assert proc.returncode == 0, proc.stdout + proc.stderr

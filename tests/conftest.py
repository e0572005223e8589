"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding ``auq/``, ``notebooks/`` and ``tests/``)."""
    return Path(__file__).resolve().parents[1]

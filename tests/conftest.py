"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding ``auq/``, ``notebooks/`` and ``tests/``)."""
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``; tests only, never library code.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def all_threads():
    """A real trunk (MiniLM) in a module pinned to :func:`one_thread`: every core for this test."""
    import os

    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> str:
    """Folder of a tiny offline GPT-2 and its tokenizer (``_tiny_models.build_tiny_lm``), built once per session."""
    from _tiny_models import build_tiny_lm

    return build_tiny_lm(str(tmp_path_factory.mktemp("tiny_lm")))

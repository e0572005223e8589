"""Value-and-gradient helpers shared by the loss tests (``test_losses.py``, ``test_trl_parity.py``)."""

from __future__ import annotations

import torch


def random_logps(b: int = 6, seed: int = 0, scale: float = 5.0) -> list[torch.Tensor]:
    """Four float64 leaf tensors ``[b]`` (policy chosen/rejected, reference chosen/rejected log-probs)."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(b, generator=g, dtype=torch.float64) * scale - 20.0).requires_grad_(True)
        for _ in range(4)
    ]


def value_and_grad(fn, xs):
    """``fn(*xs)`` (detached) and its gradients with respect to each of ``xs``."""
    loss = fn(*xs)
    grads = torch.autograd.grad(loss, xs)
    return loss.detach(), grads


def assert_same(a, b, rtol=1e-10, atol=1e-12):
    """Two ``value_and_grad`` results agree in value and every gradient."""
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la, lb, rtol=rtol, atol=atol)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)

"""Helpers shared by the estimators (private)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from auq._checks import as_float_tensor, check_choice, is_tensor

UNITS = ("nats", "bits")
LN2 = math.log(2.0)


def check_unit(unit: Any) -> str:
    """Validate the entropy unit (``"nats"`` or ``"bits"``)."""
    return check_choice(unit, "unit", UNITS)


def to_unit(h: torch.Tensor, unit: str) -> torch.Tensor:
    """Convert an entropy in nats to ``unit`` (and turn a -0.0 of a certain outcome into 0.0)."""
    return (h / LN2 if unit == "bits" else h) + 0.0


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype to compute in: float32/float64 as given, half precisions upcast to float32."""
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def restore_torch(t: torch.Tensor) -> torch.Tensor:
    """``restore`` for tensor output (used when one of several inputs was a tensor)."""
    return t


def as_tensor_pair(
    a: Any, b: Any, name_a: str, name_b: str, *, ndim: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Convert two arrays that go together; tensor output when either is a tensor.

    A non-tensor argument is placed on the device and dtype of the tensor one, so that mixed
    NumPy/torch input works and the result follows the tensor.
    """
    if not is_tensor(a) and is_tensor(b):
        tb, restore = as_float_tensor(b, name_b, ndim=ndim)
        ta, _ = as_float_tensor(a, name_a, ndim=ndim, like=tb)
    else:
        ta, restore = as_float_tensor(a, name_a, ndim=ndim)
        tb, _ = as_float_tensor(b, name_b, ndim=ndim, like=ta if is_tensor(a) else None)
    if tuple(ta.shape) != tuple(tb.shape):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(ta.shape)} and "
            f"{tuple(tb.shape)}"
        )
    if is_tensor(b) and is_tensor(a) and ta.device != tb.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {ta.device} and {tb.device}"
        )
    if ta.dtype != tb.dtype:
        dtype = torch.promote_types(ta.dtype, tb.dtype)
        ta, tb = ta.to(dtype), tb.to(dtype)
    return ta, tb, restore


def population_std(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Population standard deviation (ddof=0) along ``dim`` with a finite gradient everywhere.

    Two-pass (mean first, then the mean squared deviation), so a large common offset does not
    cancel catastrophically. Where every value is equal the std is exactly 0 and its gradient is
    0 (a subgradient), instead of the NaN that ``sqrt`` gives at 0.
    """
    dev = x - x.mean(dim=dim, keepdim=True)
    var = (dev * dev).mean(dim=dim)
    positive = var > 0
    safe = torch.where(positive, var, torch.ones_like(var))
    return torch.where(positive, torch.sqrt(safe), torch.zeros_like(var))


def to_numpy_column(x: Any) -> np.ndarray:
    """A result field as a NumPy array for a DataFrame column (tensors detached, on the CPU)."""
    if is_tensor(x):
        x = x.detach().to("cpu")
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float64)
        return x.numpy()
    return np.asarray(x)

"""Input validation: the one place every auq module checks its arguments.

Every public function in auq validates its inputs through the helpers here, so that bad input
always gives the same kind of error: a :class:`ValueError` (bad value: NaN, inf, empty, out of
range, wrong shape, unknown option) or :class:`TypeError` (wrong type) whose message starts with
the argument's name and says what was wrong.

Arrays may arrive as lists, tuples, NumPy arrays, pandas Series or torch tensors.
:func:`as_float_array` turns any of them into a float64 NumPy array (metrics are computed in float64);
:func:`as_float_tensor` turns any of them into a floating torch tensor and remembers how to give the
result back in the caller's type (numpy in, numpy out; torch in, torch out on the same device).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

try:  # torch is a hard dependency, but keep the numeric core importable without it in a pinch
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

__all__ = [
    "is_tensor",
    "as_float_array",
    "as_float_tensor",
    "check_finite",
    "check_probabilities",
    "check_labels",
    "check_same_shape",
    "check_same_length",
    "check_weights",
    "check_int",
    "check_float",
    "check_choice",
    "check_device",
    "check_columns",
    "check_texts",
    "renamed_kwarg",
    "renamed_kwargs",
]


def is_tensor(x: Any) -> bool:
    """Return True when ``x`` is a torch tensor."""
    return torch is not None and isinstance(x, torch.Tensor)


def _describe(x: Any) -> str:
    return type(x).__name__


def _check_ndim(shape: tuple[int, ...], name: str, ndim: int | Sequence[int] | None) -> None:
    if ndim is None:
        return
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(shape) not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name} must be {want}, got shape {tuple(shape)}")


def _check_nonempty(shape: tuple[int, ...], name: str) -> None:
    if any(s == 0 for s in shape) or (len(shape) > 0 and math.prod(shape) == 0):
        raise ValueError(f"{name} is empty (shape {tuple(shape)}); at least one value is needed")


def check_finite(values: np.ndarray | Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``values`` holds NaN or ±inf.

    Works on NumPy arrays and torch tensors without copying torch tensors to the host
    unless they hold a non-finite value.
    """
    if is_tensor(values):
        if values.is_floating_point() or values.is_complex():
            finite = torch.isfinite(values)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(values).sum())
                n_inf = int(values.numel() - finite.sum() - n_nan)
                raise ValueError(_nonfinite_message(name, n_nan, n_inf))
        return
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(arr.size - finite.sum() - n_nan)
            raise ValueError(_nonfinite_message(name, n_nan, n_inf))


def _nonfinite_message(name: str, n_nan: int, n_inf: int) -> str:
    parts = []
    if n_nan:
        parts.append(f"{n_nan} NaN")
    if n_inf:
        parts.append(f"{n_inf} infinite")
    return f"{name} contains {' and '.join(parts)} value(s); all values must be finite"


def as_float_array(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    allow_empty: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """Convert ``x`` to a float64 NumPy array and validate it.

    Parameters
    ----------
    x : array-like or torch.Tensor
        List, tuple, NumPy array, pandas Series or torch tensor of real numbers.
    name : str
        The argument's name, used in error messages.
    ndim : int or sequence of int, optional
        Allowed numbers of dimensions.
    allow_empty : bool, default False
        Whether an array with no elements is accepted.
    finite : bool, default True
        Whether NaN and ±inf are rejected.

    Returns
    -------
    numpy.ndarray
        A float64 array (a view where no conversion was needed).

    Examples
    --------
    >>> as_float_array([0.2, 0.9], "probs")
    array([0.2, 0.9])
    """
    if x is None:
        raise TypeError(f"{name} is required, got None")
    if is_tensor(x):
        arr = x.detach().to("cpu")
        if arr.dtype == torch.bool:
            arr = arr.to(torch.float64)
        if not (arr.is_floating_point() or arr.dtype in _TORCH_INT_DTYPES):
            raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {arr.dtype}")
        arr = arr.to(torch.float64).numpy()
    else:
        if isinstance(x, (str, bytes, Mapping)):
            raise TypeError(f"{name} must be an array of numbers, got {_describe(x)}")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as err:  # ragged lists
            raise ValueError(f"{name} could not be read as a numeric array: {err}") from None
        if arr.dtype == object:
            raise TypeError(
                f"{name} must be an array of numbers, got values of mixed or non-numeric type"
            )
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64, copy=False)
    _check_ndim(arr.shape, name, ndim)
    if not allow_empty:
        _check_nonempty(arr.shape, name)
    if finite:
        check_finite(arr, name)
    return arr


_TORCH_INT_DTYPES = (
    ()
    if torch is None
    else (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
)


class _Restore:
    """Gives a result back in the type the caller passed in (see :func:`as_float_tensor`)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, t: Any) -> Any:
        if self.kind == "torch":
            return t
        return t.detach().cpu().numpy()


def as_float_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    allow_empty: bool = False,
    finite: bool = True,
    like: Any = None,
) -> tuple[Any, Callable[[Any], Any]]:
    """Convert ``x`` to a floating torch tensor, validated, plus a function that restores the type.

    A torch tensor is kept as it is (same device, same floating dtype, gradients kept; integer and
    bool tensors become float32). Anything else becomes a float64 tensor on the CPU, or on the
    device and dtype of ``like`` when given. The returned ``restore`` turns a result tensor back into
    the caller's type: a tensor for tensor input, a NumPy array otherwise.

    Examples
    --------
    >>> t, restore = as_float_tensor([1.0, -2.0], "margins")
    >>> restore(t * 2)
    array([ 2., -4.])
    """
    if x is None:
        raise TypeError(f"{name} is required, got None")
    if is_tensor(x):
        t = x
        if not t.is_floating_point():
            if t.dtype == torch.bool or t.dtype in _TORCH_INT_DTYPES:
                t = t.to(torch.float32)
            else:
                raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {t.dtype}")
        kind = "torch"
        _check_ndim(tuple(t.shape), name, ndim)
        if not allow_empty:
            _check_nonempty(tuple(t.shape), name)
        if finite:
            check_finite(t.detach(), name)
    else:
        arr = as_float_array(x, name, ndim=ndim, allow_empty=allow_empty, finite=finite)
        if like is not None and is_tensor(like):
            t = torch.as_tensor(arr, dtype=like.dtype, device=like.device)
        else:
            t = torch.from_numpy(np.ascontiguousarray(arr))
        kind = "numpy"
    return t, _Restore(kind)



def as_tensor_on(x: Any, name: str, *, like: Any = None, ndim: Any = None) -> Any:
    """:func:`as_float_tensor` without the restore, moved to ``like``'s device (tensors included).

    Examples
    --------
    >>> import torch
    >>> as_tensor_on([1, 2], "x", like=torch.zeros(2, dtype=torch.float64)).dtype
    torch.float64
    """
    t, _ = as_float_tensor(x, name, ndim=ndim, like=like)
    if like is not None and is_tensor(like) and t.device != like.device:
        t = t.to(like.device)
    return t

def check_probabilities(values: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless every value is finite and lies in [0, 1]."""
    _check_unit_interval(values, name, "probabilities")


def check_labels(values: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless every label is finite and in [0, 1] (soft labels allowed)."""
    _check_unit_interval(values, name, "labels")


def _check_unit_interval(values: Any, name: str, what: str) -> None:
    # Fast path: two reductions; min/max propagate NaN, so NaN fails the comparison too.
    if is_tensor(values):
        if values.numel() == 0:
            return
        lo, hi = float(values.min()), float(values.max())
    else:
        arr = np.asarray(values)
        if arr.size == 0:
            return
        lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return
    check_finite(values, name)
    bad = lo if lo < 0.0 else hi
    raise ValueError(f"{name} must be {what} in [0, 1], got a value of {bad!r}")


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))


def check_same_shape(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` when ``a`` and ``b`` differ in shape, naming both arguments."""
    sa, sb = _shape(a), _shape(b)
    if sa != sb:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {sa} and {sb}")


def check_same_length(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` when ``a`` and ``b`` differ in their first dimension."""
    la, lb = len(a), len(b)
    if la != lb:
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {la} and {lb}")


def check_weights(weights: Any, name: str, n: int) -> np.ndarray | None:
    """Validate optional per-item sample weights; return them as float64 or ``None``.

    Weights must be a finite, non-negative 1-D array of length ``n`` with a positive sum.
    """
    if weights is None:
        return None
    w = as_float_array(weights, name, ndim=1)
    if w.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (one weight per item), got {w.shape[0]}")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative, got a value of {float(w.min())!r}")
    if not w.sum() > 0:
        raise ValueError(f"{name} must not all be zero")
    return w


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, raising ``TypeError``/``ValueError`` naming ``name`` when invalid."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_describe(value)} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    inclusive: tuple[bool, bool] = (True, True),
) -> float:
    """Return ``value`` as a finite float within bounds, raising an error naming ``name`` otherwise.

    ``inclusive`` says whether the lower and upper bound themselves are allowed.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if is_tensor(value) and value.numel() == 1:
            value = float(value)
        else:
            raise TypeError(f"{name} must be a real number, got {_describe(value)} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if value < minimum or (not inclusive[0] and value == minimum):
            op = ">=" if inclusive[0] else ">"
            raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    if maximum is not None:
        if value > maximum or (not inclusive[1] and value == maximum):
            op = "<=" if inclusive[1] else "<"
            raise ValueError(f"{name} must be {op} {maximum}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; otherwise raise ``ValueError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_columns(columns: Iterable[str], required: Iterable[str], name: str) -> None:
    """Raise ``ValueError`` naming the missing columns of the table ``name``."""
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise ValueError(
            f"{name} is missing required column(s) {missing}; it has {sorted(have)}"
        )


def check_texts(
    texts: Sequence[Any],
    name: str,
    *,
    allow_blank: bool = False,
    allow_empty: bool = False,
    allow_no_rows: bool = False,
) -> list[str]:
    """Check that every item of ``texts`` is a string; return them as a list.

    Parameters
    ----------
    texts : sequence
        The texts.
    name : str
        The argument's (or column's) name, used in error messages with the first bad row.
    allow_blank : bool, default False
        Accept whitespace-only strings such as ``" "`` (real preference data hold replies like that).
    allow_empty : bool, default False
        Accept ``""`` too (a prompt may be empty).
    allow_no_rows : bool, default False
        Accept a sequence with no items.

    Examples
    --------
    >>> check_texts(["a", " "], "chosen", allow_blank=True)
    ['a', ' ']
    """
    out = list(texts)
    if not out and not allow_no_rows:
        raise ValueError(f"{name} is empty; at least one text is needed")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a string, got {_describe(t)}")
        if allow_empty:
            continue
        if t == "":
            raise ValueError(f"{name}[{i}] is an empty string")
        if not allow_blank and not t.strip():
            raise ValueError(f"{name}[{i}] is blank (whitespace only)")
    return out


def check_device(device: Any, name: str = "device") -> Any:
    """Return ``torch.device(device)``; an unknown device string raises ``ValueError`` naming ``name``.

    Examples
    --------
    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("gpu0")
    Traceback (most recent call last):
    ...
    ValueError: device 'gpu0' is not a device: use 'cpu', 'cuda', 'cuda:N' or 'mps'
    """
    if torch is not None and isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a str or torch.device, got {type(device).__name__}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"{name} {device!r} is not a device: use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None


def renamed_kwarg(
    kwargs: dict[str, Any],
    old: str,
    new: str,
    *,
    where: str,
    new_given: bool = False,
    stacklevel: int = 3,
) -> None:
    """Move the deprecated keyword ``old`` to its new name ``new`` inside ``kwargs`` (in place).

    A renamed keyword argument is accepted for one release: passing ``old`` emits a
    :class:`FutureWarning` naming ``new``; passing both (``new`` in ``kwargs``, or
    ``new_given=True`` when it came positionally) is a :class:`TypeError` naming both.
    Nothing happens when ``old`` is not in ``kwargs``. Prefer the decorator
    :func:`renamed_kwargs` for functions; call this directly where a decorator does not fit
    (e.g. inside a config's ``__init__``).

    Parameters
    ----------
    kwargs : dict
        The keyword arguments as passed; ``old`` is popped and stored under ``new``.
    old, new : str
        The deprecated and the current name.
    where : str
        What the arguments belong to, e.g. ``"uncertainty_weights()"``, used in the messages.
    new_given : bool, default False
        True when ``new`` was already passed (e.g. positionally).
    stacklevel : int, default 3
        Passed to :func:`warnings.warn` (3 points at the caller of a function that calls this one).

    Examples
    --------
    >>> import warnings
    >>> kw = {"tau": 0.5}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed_kwarg(kw, "tau", "temperature", where="f()")
    >>> kw, caught[0].category.__name__
    ({'temperature': 0.5}, 'FutureWarning')
    >>> renamed_kwarg({"tau": 0.5, "temperature": 1.0}, "tau", "temperature", where="f()")
    Traceback (most recent call last):
    ...
    TypeError: f() got both tau= (deprecated) and temperature=; pass only temperature=
    """
    if old not in kwargs:
        return
    if new_given or new in kwargs:
        raise TypeError(f"{where} got both {old}= (deprecated) and {new}=; pass only {new}=")
    warnings.warn(
        f"{where}: {old}= is deprecated and will be removed in the next release; use {new}= instead",
        FutureWarning,
        stacklevel=stacklevel,
    )
    kwargs[new] = kwargs.pop(old)


def renamed_kwargs(**renames: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: accept deprecated keyword names ``old=new`` for one release (see :func:`renamed_kwarg`).

    The decorated function keeps its signature (only the new names); a call with an old name warns
    with a :class:`FutureWarning` naming the new one, and a call passing both the old name and the
    new one (by keyword or by position) raises a :class:`TypeError` naming both.

    Examples
    --------
    >>> @renamed_kwargs(tau="temperature")
    ... def soften(x, temperature=1.0):
    ...     return x / temperature
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", FutureWarning)
    ...     soften(1.0, tau=4.0)
    0.25
    >>> soften(1.0, 4.0, tau=2.0)
    Traceback (most recent call last):
    ...
    TypeError: soften() got both tau= (deprecated) and temperature=; pass only temperature=
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(func).parameters
        for old, new in renames.items():
            if new not in params or old in params:
                raise ValueError(f"renamed_kwargs({old}={new!r}): {func.__qualname__} must take {new}= and not {old}=")
        positional = [
            p.name for p in params.values()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        where = f"{func.__qualname__}()"

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs and not renames.keys().isdisjoint(kwargs):
                by_position = set(positional[: len(args)])
                for old, new in renames.items():
                    renamed_kwarg(kwargs, old, new, where=where, new_given=new in by_position)
            return func(*args, **kwargs)

        wrapper.__renamed_kwargs__ = dict(renames)  # type: ignore[attr-defined]
        return wrapper

    return decorate

"""Reading the inputs of plot functions: result objects (duck-typed by field name) and arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from auq._checks import as_float_array, check_same_length, is_tensor

_TABLE_FIELDS = ("bin_lower", "bin_upper", "count", "mean_confidence", "observed_frequency")
_CURVE_FIELDS = ("coverage", "risk")


def get_field(obj: Any, field: str) -> Any:
    """Return ``obj.field`` or ``obj[field]`` (dataclass, namedtuple, dict, DataFrame row set)."""
    if isinstance(obj, Mapping):
        return obj[field]
    if hasattr(obj, "columns") and hasattr(obj, "__getitem__"):  # pandas DataFrame
        return obj[field]
    return getattr(obj, field)


def has_fields(obj: Any, fields: Sequence[str]) -> bool:
    """Whether ``obj`` carries all ``fields`` as attributes or keys (arrays never do)."""
    if obj is None or isinstance(obj, (np.ndarray, str, bytes, list, tuple)) or is_tensor(obj):
        return False
    if isinstance(obj, Mapping):
        return all(f in obj for f in fields)
    if hasattr(obj, "columns"):
        return all(f in obj.columns for f in fields)
    return all(hasattr(obj, f) for f in fields)


def is_table(obj: Any) -> bool:
    """Whether ``obj`` looks like a :class:`~auq.calibration.ReliabilityTable`."""
    return has_fields(obj, _TABLE_FIELDS)


def is_curve(obj: Any) -> bool:
    """Whether ``obj`` looks like a :class:`~auq.calibration.RiskCoverage`."""
    return has_fields(obj, _CURVE_FIELDS)


def field_array(obj: Any, field: str, name: str, *, finite: bool = True) -> np.ndarray:
    """Read field ``field`` of ``obj`` as a 1-D float64 array; errors name ``name.field``."""
    try:
        value = get_field(obj, field)
    except (AttributeError, KeyError):
        raise ValueError(f"{name} has no field {field!r}") from None
    return as_float_array(value, f"{name}.{field}", ndim=1, finite=finite)


def table_arrays(table: Any, name: str) -> dict[str, np.ndarray]:
    """The arrays of a reliability table, checked for equal lengths.

    ``observed_frequency`` and ``mean_confidence`` may be NaN in empty bins; ``weight`` falls
    back to ``count`` when the table has none.
    """
    out = {
        "bin_lower": field_array(table, "bin_lower", name),
        "bin_upper": field_array(table, "bin_upper", name),
        "count": field_array(table, "count", name),
        "mean_confidence": field_array(table, "mean_confidence", name, finite=False),
        "observed_frequency": field_array(table, "observed_frequency", name, finite=False),
    }
    out["weight"] = (
        field_array(table, "weight", name) if has_fields(table, ("weight",)) else out["count"]
    )
    n = len(out["bin_lower"])
    for key, arr in out.items():
        if len(arr) != n:
            raise ValueError(
                f"{name}.{key} and {name}.bin_lower must have the same length, got {len(arr)} and {n}"
            )
    if (out["count"] < 0).any():
        raise ValueError(f"{name}.count must be non-negative")
    if (out["bin_upper"] < out["bin_lower"]).any():
        raise ValueError(f"{name}.bin_upper must be >= {name}.bin_lower in every bin")
    return out


def nonempty_bins(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean mask of bins that hold data (positive count and finite statistics)."""
    return (
        (arrays["count"] > 0)
        & np.isfinite(arrays["observed_frequency"])
        & np.isfinite(arrays["mean_confidence"])
    )


def as_vector(x: Any, name: str) -> np.ndarray:
    """A non-empty, finite 1-D float64 array (errors name ``name``)."""
    return as_float_array(x, name, ndim=1)


def same_length(arrays: Sequence[tuple[np.ndarray, str]]) -> None:
    """Check that all named arrays have the length of the first one."""
    first, first_name = arrays[0]
    for arr, name in arrays[1:]:
        check_same_length(arr, first, name, first_name)


def entry_names(
    keys: Sequence[str] | None, n: int, names: Sequence[str] | None, default: str
) -> list[str | None]:
    """Names for ``n`` plotted entries: mapping keys, else ``names``, else ``default i``."""
    if names is not None:
        if isinstance(names, str):
            names = [names]
        names = list(names)
        if len(names) != n:
            raise ValueError(f"names must have one name per entry ({n}), got {len(names)}")
        return [str(s) for s in names]
    if keys is not None:
        return [str(k) for k in keys]
    if n == 1:
        return [None]
    return [f"{default} {i + 1}" for i in range(n)]


def is_sequence_of(obj: Any, predicate: Any) -> bool:
    """Whether ``obj`` is a non-empty list/tuple whose items all satisfy ``predicate``."""
    return isinstance(obj, (list, tuple)) and len(obj) > 0 and all(predicate(o) for o in obj)


def check_mapping(obj: Mapping[Any, Any], name: str) -> None:
    """Raise when a mapping of entries is empty."""
    if len(obj) == 0:
        raise ValueError(f"{name} is empty; give at least one entry")


def input_items(
    obj: Any, companion: Any, arg: str, companion_arg: str, is_summary: Any
) -> tuple[list[str] | None, list[tuple[str, Any, Any, str]]]:
    """Every accepted input form of a multi-model plot as ``(keys, items)``.

    ``obj`` is a summary (``is_summary``: a reliability table, a risk-coverage curve), a sequence of
    summaries, raw values (with ``companion``: labels, correctness) or a mapping name -> any of
    those or a ``(values, companion)`` tuple; ``companion`` may be a mapping with the same keys.
    ``keys`` are the mapping's names (None otherwise); each item is ``(error name, summary or raw
    values, companion or None, the companion's error name)``.
    """
    if isinstance(obj, Mapping) and not is_summary(obj):
        check_mapping(obj, arg)
        items = []
        for k, v in obj.items():
            comp = companion[k] if isinstance(companion, Mapping) else companion
            comp_name = f"{companion_arg}[{k!r}]" if isinstance(companion, Mapping) else companion_arg
            if isinstance(v, tuple) and len(v) == 2 and not is_summary(v):
                v, comp = v
                comp_name = f"{arg}[{k!r}][1]"
            items.append((f"{arg}[{k!r}]", v, comp, comp_name))
        return [str(k) for k in obj], items
    if is_summary(obj):
        return None, [(arg, obj, None, companion_arg)]
    if is_sequence_of(obj, is_summary):
        return None, [(f"{arg}[{i}]", s, None, companion_arg) for i, s in enumerate(obj)]
    return None, [(arg, obj, companion, companion_arg)]

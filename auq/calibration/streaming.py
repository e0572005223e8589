"""Streaming calibration accumulators (torchmetrics-style ``update`` / ``compute`` / ``reset``).

Each accumulator keeps O(n_bins) sufficient statistics, the same per-bin sums the batch functions
compute through :mod:`auq.calibration._binning`, so ``compute()`` equals the batch function on the
concatenated data up to floating-point summation order (tested to 1e-12), for any chunking, and
``merge`` combines accumulators fed on different shards (e.g. different processes).

Only equal-width bins can stream: equal-mass (quantile) edges are percentiles of *all*
predictions, unknown until the stream ends, and a prediction's bin could change with every new
chunk, so the per-bin sums could not be accumulated without keeping every prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from auq import _checks

from . import _binning
from ._inputs import NORMS, _prepare
from .metrics import _TABLE_STATS, ReliabilityTable, _ece_from_sums, _table_from_sums
from .scores import _BRIER_STATS, BrierDecomposition, _brier_from_sums, _nll_terms

__all__ = ["StreamingECE", "StreamingBrier", "StreamingNLL"]


class _BinnedAccumulator:
    _stats: tuple[str, ...] = ()

    def __init__(self, n_bins: int = 15):
        self.n_bins = _checks.check_int(n_bins, "n_bins", minimum=1)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._sums = {
            s: np.zeros(self.n_bins, dtype=np.int64 if s == "count" else np.float64)
            for s in self._stats
        }

    @property
    def total_weight(self) -> float:
        return float(self._sums["weight"].sum())

    def update(self, probs: Any, labels: Any, weights: Any = None) -> None:
        """Add a batch of predictions (probabilities in [0, 1]) and labels (hard or soft)."""
        p, y, w = _prepare(probs, labels, weights)
        s = _binning.bin_sums(p, y, w, self.n_bins, self._stats)
        for k in self._stats:
            self._sums[k] += s[k]

    def merge(self, other: _BinnedAccumulator) -> _BinnedAccumulator:
        """Add another accumulator's statistics into this one (in place); returns ``self``."""
        if type(other) is not type(self):
            raise TypeError(f"other must be a {type(self).__name__}, got {type(other).__name__}")
        if other.n_bins != self.n_bins:
            raise ValueError(f"other has n_bins={other.n_bins}, this accumulator {self.n_bins}")
        for k in self._stats:
            self._sums[k] += other._sums[k]
        return self

    def _check_nonempty(self) -> None:
        if not self.total_weight > 0:
            raise ValueError("compute() called before any update with positive weight")


class StreamingECE(_BinnedAccumulator):
    """Expected calibration error over a stream (equal-width bins only; see the module docstring).

    Parameters
    ----------
    n_bins : int, default 15
    norm : {"l1", "l2", "max"}, default "l1"

    Examples
    --------
    >>> acc = StreamingECE(n_bins=2)
    >>> acc.update([0.25, 0.25, 0.55], [0, 0, 1]); acc.update([0.75, 0.75], [1, 1])
    >>> round(acc.compute(), 10)
    0.29
    """

    _stats = _TABLE_STATS

    def __init__(self, n_bins: int = 15, norm: str = "l1"):
        self.norm = _checks.check_choice(norm, "norm", NORMS)
        super().__init__(n_bins)

    def compute(self) -> float:
        """ECE of everything seen so far (equals :func:`expected_calibration_error`)."""
        self._check_nonempty()
        return _ece_from_sums(self._sums, self.total_weight, self.norm)

    def reliability_table(self) -> ReliabilityTable:
        """Reliability table of everything seen so far (equals :func:`reliability_table`)."""
        self._check_nonempty()
        return _table_from_sums(self._sums, _binning.uniform_edges(self.n_bins))

    def merge(self, other: StreamingECE) -> StreamingECE:  # noqa: D102
        if isinstance(other, StreamingECE) and other.norm != self.norm:
            raise ValueError(f"other has norm={other.norm!r}, this accumulator {self.norm!r}")
        return super().merge(other)


class StreamingBrier(_BinnedAccumulator):
    """Brier score and its Murphy decomposition over a stream (equal-width bins).

    ``compute()`` returns the Brier score; ``decomposition()`` the full
    :class:`~auq.calibration.BrierDecomposition` (equal to :func:`brier_decomposition`).

    Examples
    --------
    >>> acc = StreamingBrier(n_bins=10)
    >>> acc.update([0.9, 0.2], [1, 0])
    >>> round(acc.compute(), 6)
    0.025
    """

    _stats = _BRIER_STATS

    def compute(self) -> float:
        """Brier score of everything seen so far."""
        return self.decomposition().brier

    def decomposition(self) -> BrierDecomposition:
        """Murphy decomposition of everything seen so far."""
        self._check_nonempty()
        return _brier_from_sums(self._sums, self.n_bins)


class StreamingNLL:
    """Mean negative log-likelihood (nats) over a stream; clipping as in
    :func:`~auq.calibration.negative_log_likelihood`.

    Examples
    --------
    >>> acc = StreamingNLL()
    >>> acc.update([0.9], [1]); acc.update([0.2], [0])
    >>> round(acc.compute(), 6)
    0.164252
    """

    def __init__(self, eps: float = float(np.finfo(np.float64).eps)):
        self.eps = _checks.check_float(eps, "eps", minimum=0.0, maximum=0.5)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._loss = 0.0
        self._weight = 0.0

    def update(self, probs: Any, labels: Any, weights: Any = None) -> None:
        """Add a batch of predictions and labels."""
        p, y, w = _prepare(probs, labels, weights)
        terms = _nll_terms(p, y, self.eps)
        if w is None:
            self._loss += float(terms.sum())
            self._weight += float(p.shape[0])
        else:
            self._loss += float(np.dot(terms, w))
            self._weight += float(w.sum())

    def merge(self, other: StreamingNLL) -> StreamingNLL:
        """Add another accumulator's statistics into this one (in place); returns ``self``."""
        if not isinstance(other, StreamingNLL):
            raise TypeError(f"other must be a StreamingNLL, got {type(other).__name__}")
        self._loss += other._loss
        self._weight += other._weight
        return self

    def compute(self) -> float:
        """Mean NLL of everything seen so far."""
        if not self._weight > 0:
            raise ValueError("compute() called before any update with positive weight")
        return self._loss / self._weight

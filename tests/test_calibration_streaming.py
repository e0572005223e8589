"""Streaming accumulators equal the batch functions for any chunking and merge order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auq.calibration import (
    StreamingBrier,
    StreamingECE,
    StreamingNLL,
    brier_decomposition,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_table,
)


def _data(n, seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    p[: min(n, 3)] = [0.0, 1.0, 0.2][: min(n, 3)]
    y = (rng.uniform(size=n) < p**1.5).astype(float)
    w = rng.uniform(0.1, 3.0, size=n)
    return p, y, w


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    n_bins=st.integers(1, 25),
    weighted=st.booleans(),
)
def test_streaming_equals_batch_any_chunking_and_merge(n, seed, cuts, n_bins, weighted):
    p, y, w = _data(n, seed)
    if not weighted:
        w = None
    bounds = sorted({0, n, *[c % (n + 1) for c in cuts]})
    parts = list(zip(bounds[:-1], bounds[1:]))
    eces = {norm: StreamingECE(n_bins, norm=norm) for norm in ("l1", "l2", "max")}
    brier, nll = StreamingBrier(n_bins), StreamingNLL()
    # second set fed chunk by chunk into separate accumulators, then merged
    shards = []
    for a, b in parts:
        ww = None if w is None else w[a:b]
        for acc in (*eces.values(), brier, nll):
            acc.update(p[a:b], y[a:b], weights=ww)
        s = (StreamingECE(n_bins, norm="l2"), StreamingBrier(n_bins), StreamingNLL())
        for acc in s:
            acc.update(p[a:b], y[a:b], weights=ww)
        shards.append(s)
    for norm, acc in eces.items():
        ref = expected_calibration_error(p, y, n_bins=n_bins, norm=norm, weights=w)
        assert acc.compute() == pytest.approx(ref, abs=1e-12)
    d_ref = brier_decomposition(p, y, n_bins=n_bins, weights=w)
    d = brier.decomposition()
    for f in ("brier", "reliability", "resolution", "uncertainty", "within_bin_variance"):
        assert getattr(d, f) == pytest.approx(getattr(d_ref, f), abs=1e-12)
    assert nll.compute() == pytest.approx(negative_log_likelihood(p, y, weights=w), abs=1e-12)
    merged = shards[0]
    for s in reversed(shards[1:]):
        for acc, other in zip(merged, s):
            acc.merge(other)
    assert merged[0].compute() == pytest.approx(
        expected_calibration_error(p, y, n_bins=n_bins, norm="l2", weights=w), abs=1e-12
    )
    assert merged[1].compute() == pytest.approx(d_ref.brier, abs=1e-12)
    assert merged[2].compute() == pytest.approx(nll.compute(), abs=1e-12)


def test_streaming_large_chunks_and_table():
    p, y, _ = _data(300_000, 1)  # spans several internal CHUNKs
    acc = StreamingECE(15)
    for a in range(0, 300_000, 70_001):
        acc.update(p[a : a + 70_001], y[a : a + 70_001])
    assert acc.compute() == pytest.approx(expected_calibration_error(p, y), abs=1e-12)
    t, ref = acc.reliability_table(), reliability_table(p, y)
    np.testing.assert_array_equal(t.count, ref.count)
    np.testing.assert_allclose(t.observed_frequency, ref.observed_frequency, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t.mean_confidence, ref.mean_confidence, rtol=0, atol=1e-12)


def test_reset_state_size_and_errors():
    acc = StreamingBrier(10)
    acc.update([0.9, 0.2], [1, 0])
    assert acc.compute() == pytest.approx(0.025)
    acc.reset()
    with pytest.raises(ValueError, match="compute"):
        acc.compute()
    with pytest.raises(ValueError, match="compute"):
        StreamingNLL().compute()
    # memory is O(n_bins): the state does not grow with the data
    e = StreamingECE(15)
    e.update(np.full(100_000, 0.3), np.zeros(100_000))
    assert all(v.shape == (15,) for v in e._sums.values())
    with pytest.raises(ValueError, match="n_bins"):
        StreamingECE(0)
    with pytest.raises(ValueError, match="norm"):
        StreamingECE(norm="l3")
    with pytest.raises(ValueError, match="n_bins"):
        StreamingECE(10).merge(StreamingECE(15))
    with pytest.raises(ValueError, match="norm"):
        StreamingECE(10).merge(StreamingECE(10, norm="max"))
    with pytest.raises(TypeError, match="other"):
        StreamingECE(10).merge(StreamingBrier(10))
    with pytest.raises(ValueError, match="probs"):
        e.update([1.5], [1])
    with pytest.raises(ValueError, match="labels"):
        e.update([0.5], [np.nan])

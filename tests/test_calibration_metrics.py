"""Calibration metrics: reference agreement, hand cases, properties, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from auq.calibration import (
    ConfidenceInterval,
    _binning,
    bootstrap_ci,
    brier_decomposition,
    brier_score,
    debiased_calibration_error,
    expected_calibration_error,
    negative_log_likelihood,
    negative_log_likelihood_from_logits,
    pairwise_calibration_error,
    pairwise_reliability_table,
    preference_accuracy,
    reliability_table,
    smooth_calibration_error,
)

TOL = 1e-9


def _data(n=4000, seed=0, power=1.3, soft=False):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    if soft:
        y = rng.uniform(size=n) * p
    else:
        y = (rng.uniform(size=n) < p**power).astype(np.float64)
    return p, y


# ----------------------------------------------------------------------------- binning conventions
def test_edge_convention_hand_cases():
    # value on an inner edge -> bin above; 0 -> first bin; 1.0 -> last bin
    p = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.19999999999999998, 0.3])
    assert _binning.bin_indices(p, 5).tolist() == [0, 1, 2, 3, 4, 4, 0, 1]
    assert _binning.bin_indices(np.array([0.3, 0.7, 0.1]), 10).tolist() == [3, 7, 1]


@pytest.mark.parametrize("n_bins", [1, 2, 3, 7, 10, 15, 22, 47, 49, 98, 100])
def test_uniform_index_equals_searchsorted_near_every_edge(n_bins):
    edges = _binning.uniform_edges(n_bins)
    near = [edges]
    x = edges.copy()
    y = edges.copy()
    for _ in range(4):  # 4 ulps on each side of every edge
        x = np.nextafter(x, 2.0)
        y = np.nextafter(y, -1.0)
        near += [x, y]
    p = np.clip(np.concatenate(near + [np.random.default_rng(1).uniform(size=1000)]), 0.0, 1.0)
    expected = np.searchsorted(edges[1:-1], p, side="right")
    np.testing.assert_array_equal(_binning.bin_indices(p, n_bins), expected)
    # and the chunked accumulator agrees
    counts = _binning.bin_sums(p, np.zeros_like(p), None, n_bins, ["count"])["count"]
    np.testing.assert_array_equal(counts, np.bincount(expected, minlength=n_bins))


def test_fixups_exist_for_pathological_n_bins():
    assert _binning._floor_fixups(49)  # fl(fl(1/49) * 49) < 1
    assert _binning.bin_indices(np.array([1 / 49]), 49).tolist() == [1]


# ----------------------------------------------------------------------------- hand-computed
def test_ece_hand_case_all_norms():
    p = [0.25, 0.25, 0.55, 0.75, 0.75]
    y = [0, 0, 1, 1, 1]
    # bin 0: conf 0.25, obs 0 (w 2/5); bin 1: conf (0.55+1.5)/3 = 0.68333, obs 1 (w 3/5)
    gap1 = 1 - (0.55 + 0.75 + 0.75) / 3
    assert expected_calibration_error(p, y, n_bins=2) == pytest.approx(0.4 * 0.25 + 0.6 * gap1, abs=1e-15)
    l2 = math.sqrt(0.4 * 0.25**2 + 0.6 * gap1**2)
    assert expected_calibration_error(p, y, n_bins=2, norm="l2") == pytest.approx(l2, abs=1e-15)
    assert expected_calibration_error(p, y, n_bins=2, norm="max") == pytest.approx(gap1, abs=1e-15)


def test_reliability_table_hand_case_and_empty_bins():
    t = reliability_table([0.1, 0.15, 0.9, 1.0], [0, 1, 1, 1], n_bins=4)
    assert t.count.tolist() == [2, 0, 0, 2]
    np.testing.assert_allclose(t.mean_confidence, [0.125, 0.375, 0.625, 0.95])  # empty: midpoints
    np.testing.assert_allclose(t.observed_frequency, [0.5, 0.375, 0.625, 1.0])
    np.testing.assert_allclose(t.gap, [-0.375, 0.0, 0.0, -0.05])
    assert not np.isnan(t.to_pandas().to_numpy(dtype=float)).any()
    assert t.nonempty.tolist() == [True, False, False, True]
    assert t.ece() == pytest.approx(expected_calibration_error([0.1, 0.15, 0.9, 1.0], [0, 1, 1, 1], n_bins=4))
    assert list(t.to_pandas().columns) == [
        "bin_lower", "bin_upper", "count", "weight", "mean_confidence", "observed_frequency", "gap"
    ]


def test_pairwise_hand_case_ties_and_soft_targets():
    # conf: 0.9 (correct), 0.8 (wrong: p=0.2 predicts rejected), 0.5 tie (0.5)
    assert pairwise_calibration_error([0.9, 0.2, 0.5], n_bins=10) == pytest.approx(
        (0.1 + 0.8 + 0.0) / 3, abs=1e-15
    )
    # soft: p=0.9,q=0.7 -> correct 0.7; p=0.2,q=0.1 -> correct 0.9
    t = pairwise_reliability_table([0.9, 0.2], [0.7, 0.1], n_bins=10)
    assert t.observed_frequency[9] == pytest.approx(0.7)
    assert t.observed_frequency[8] == pytest.approx(0.9)
    assert preference_accuracy([0.9, 0.2, 0.5]) == pytest.approx(0.5)
    assert preference_accuracy([0.9, 0.2, 0.5], [0.7, 0.1, 0.3]) == pytest.approx((0.7 + 0.9 + 0.5) / 3)
    assert preference_accuracy([0.9, 0.2], weights=[3, 1]) == pytest.approx(0.75)


def test_brier_decomposition_hand_case():
    d = brier_decomposition([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 0], n_bins=2)
    assert d.reliability == pytest.approx(0.5 * 0.01 + 0.5 * 0.16)
    assert d.resolution == pytest.approx(0.5 * 0.25**2 + 0.5 * 0.25**2)
    assert d.uncertainty == pytest.approx(0.25 * 0.75)
    assert d.within_bin_variance == pytest.approx(0.0, abs=1e-15)  # forecasts constant per bin
    assert d.brier == pytest.approx((0.01 * 2 + 0.01 + 0.81) / 4)


def test_nll_from_logits_finite_at_extremes_and_matches_probs():
    z = np.array([1e4, -1e4, 0.3, -2.0])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    assert negative_log_likelihood_from_logits(z, y) == pytest.approx(
        np.mean([0.0, 0.0, math.log1p(math.exp(-0.3)), math.log1p(math.exp(-2.0))]), abs=1e-15
    )
    assert math.isfinite(negative_log_likelihood_from_logits(torch.tensor(z, dtype=torch.float32), 1 - y))
    p = 1 / (1 + np.exp(-z[2:]))
    assert negative_log_likelihood_from_logits(z[2:], y[2:]) == pytest.approx(
        negative_log_likelihood(p, y[2:]), abs=1e-12
    )


# ----------------------------------------------------------------------------- references
def test_matches_sklearn_brier_log_loss():
    from sklearn.metrics import brier_score_loss, log_loss

    p, y = _data()
    p[:5] = [0.0, 1.0, 0.0, 1.0, 0.5]
    y[:5] = [0, 1, 1, 0, 1]
    w = np.random.default_rng(3).uniform(0.1, 2.0, size=p.shape[0])
    assert brier_score(p, y) == pytest.approx(brier_score_loss(y, p), abs=TOL)
    assert brier_score(p, y, weights=w) == pytest.approx(brier_score_loss(y, p, sample_weight=w), abs=TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert negative_log_likelihood(p, y) == pytest.approx(log_loss(y, p), abs=TOL)
        assert negative_log_likelihood(p, y, weights=w) == pytest.approx(
            log_loss(y, p, sample_weight=w), abs=TOL
        )


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 15])
def test_reliability_table_matches_sklearn_calibration_curve(strategy, n_bins):
    from sklearn.calibration import calibration_curve

    p, y = _data(n=3000, seed=n_bins)
    p[:4] = [0.0, 1.0, 0.5, 0.5]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    t = reliability_table(p, y, n_bins=n_bins, strategy=strategy)
    ne = t.count > 0
    np.testing.assert_allclose(t.observed_frequency[ne], prob_true, rtol=0, atol=TOL)
    np.testing.assert_allclose(t.mean_confidence[ne], prob_pred, rtol=0, atol=TOL)


def test_sklearn_edge_mapping():
    # documented difference: sklearn (side="left") sends a value on an inner edge to the bin below;
    # ours to the bin above. Moving edge values one ulp down maps our binning onto sklearn's.
    from sklearn.calibration import calibration_curve

    p, y = _data(n=1000, seed=3)
    p[:40] = np.repeat([0.2, 0.4, 0.6, 0.8], 10)
    y[:40] = 1.0
    prob_true, _ = calibration_curve(y, p, n_bins=5)
    on_edge = np.isin(p, _binning.uniform_edges(5)[1:-1])
    shifted = np.where(on_edge, np.nextafter(p, 0.0), p)
    t = reliability_table(shifted, y, n_bins=5)
    np.testing.assert_allclose(t.observed_frequency, prob_true, rtol=0, atol=TOL)
    assert not np.allclose(reliability_table(p, y, n_bins=5).observed_frequency, prob_true, atol=1e-6)


def _torchmetrics_mapping(p, y, n_bins, norm):
    """Our ECE with p == 1.0 moved to an extra bin [1, 1] (torchmetrics' convention)."""
    one = p == 1.0
    n = p.shape[0]
    rest = expected_calibration_error(p[~one], y[~one], n_bins=n_bins, norm=norm)
    n1 = int(one.sum())
    if n1 == 0:
        return rest
    gap1 = abs(1.0 - y[one].mean())
    if norm == "l1":
        return ((n - n1) * rest + n1 * gap1) / n
    if norm == "l2":
        return math.sqrt(((n - n1) * rest**2 + n1 * gap1**2) / n)
    return max(rest, gap1)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_matches_torchmetrics_binary_calibration_error(norm):
    from torchmetrics.functional.classification import binary_calibration_error

    p, y = _data(n=5000, seed=7)
    tm = float(binary_calibration_error(torch.tensor(p), torch.tensor(y).long(), n_bins=15, norm=norm))
    assert expected_calibration_error(p, y, n_bins=15, norm=norm) == pytest.approx(tm, abs=TOL)
    # with p == 1.0 present the documented mapping holds
    y[p >= 14 / 15] = 1.0  # last bin under-confident ...
    p[:300] = 1.0
    y[:200] = 0.0  # ... while p == 1.0 is over-confident: merging them changes every norm
    tm = float(binary_calibration_error(torch.tensor(p), torch.tensor(y).long(), n_bins=15, norm=norm))
    assert _torchmetrics_mapping(p, y, 15, norm) == pytest.approx(tm, abs=TOL)
    assert expected_calibration_error(p, y, n_bins=15, norm=norm) != pytest.approx(tm, abs=1e-6)


def test_matches_netcal_ece():
    from netcal.metrics import ECE

    p, y = _data(n=5000, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ECE(bins=15).measure(p, y.astype(int))
    assert expected_calibration_error(p, y, n_bins=15) == pytest.approx(ref, abs=TOL)


def test_torch_numpy_list_inputs_agree():
    p, y = _data(n=200)
    a = expected_calibration_error(p, y)
    assert expected_calibration_error(torch.tensor(p), torch.tensor(y)) == a
    assert expected_calibration_error(p.tolist(), y.tolist()) == a
    assert expected_calibration_error(torch.tensor(p, dtype=torch.float32), y) == pytest.approx(a, abs=1e-6)


# ----------------------------------------------------------------------------- weights
def test_integer_weights_equal_repetition():
    p, y = _data(n=300, seed=5, soft=True)
    c = np.random.default_rng(0).integers(0, 4, size=300)
    c[0] = 1
    rp, ry = np.repeat(p, c), np.repeat(y, c)
    for strategy in ("uniform",):
        for norm in ("l1", "l2", "max"):
            assert expected_calibration_error(p, y, strategy=strategy, norm=norm, weights=c) == pytest.approx(
                expected_calibration_error(rp, ry, strategy=strategy, norm=norm), abs=1e-12
            )
    assert brier_score(p, y, weights=c) == pytest.approx(brier_score(rp, ry), abs=1e-12)
    assert pairwise_calibration_error(p, y, weights=c) == pytest.approx(pairwise_calibration_error(rp, ry), abs=1e-12)
    assert debiased_calibration_error(p, y, strategy="uniform", weights=c) == pytest.approx(
        debiased_calibration_error(rp, ry, strategy="uniform"), abs=1e-12
    )
    assert smooth_calibration_error(p, y, weights=c) == pytest.approx(smooth_calibration_error(rp, ry), abs=1e-9)
    d1, d2 = brier_decomposition(p, y, weights=c), brier_decomposition(rp, ry)
    for f in ("brier", "reliability", "resolution", "uncertainty", "within_bin_variance"):
        assert getattr(d1, f) == pytest.approx(getattr(d2, f), abs=1e-12)


# ----------------------------------------------------------------------------- debiased / smooth
def test_debiased_removes_bias_for_calibrated_data():
    rng = np.random.default_rng(0)
    plug, deb = [], []
    for _ in range(30):
        p = rng.uniform(size=2000)
        y = (rng.uniform(size=2000) < p).astype(float)
        plug.append(expected_calibration_error(p, y, strategy="quantile", norm="l2") ** 2)
        deb.append(debiased_calibration_error(p, y, squared=True))
    # true squared CE is 0: plug-in is biased up by ~E[var]/n_b, debiased is not
    assert np.mean(plug) > 1e-3
    assert abs(np.mean(deb)) < 2e-4


def test_debiased_hand_formula():
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    e = np.percentile(p, [0, 50, 100])
    lo, hi = p < e[1], p >= e[1]
    sq = 0.0
    for m in (lo, hi):
        yb, pb = y[m].mean(), p[m].mean()
        sq += m.mean() * ((yb - pb) ** 2 - yb * (1 - yb) / (m.sum() - 1))
    assert debiased_calibration_error(p, y, n_bins=2) == pytest.approx(math.sqrt(max(sq, 0)), abs=1e-15)


def _smece_reference(p, y, sigma, n_t=20001, n_img=4):
    """Direct O(n * grid) smECE_sigma with the reflected Gaussian kernel evaluated exactly."""
    t = np.linspace(0, 1, n_t)
    acc = np.zeros(n_t)
    r = y - p
    mirror_r = np.where((p == 0) | (p == 1), 0.0, r)  # 0 and 1 are their own mirror images
    for m in range(-n_img, n_img + 1):
        for z, rr in ((p + 2 * m, r), (-p + 2 * m, mirror_r)):
            acc += (np.exp(-0.5 * ((t[:, None] - z[None, :]) / sigma) ** 2) * rr).sum(1)
    acc /= sigma * math.sqrt(2 * math.pi) * p.shape[0]
    return np.trapezoid(np.abs(acc), t)


@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_smooth_ece_matches_direct_reflected_kernel(sigma):
    p, y = _data(n=300, seed=2)
    p[:3] = [0.0, 1.0, 0.5]
    ref = _smece_reference(p, y, sigma)
    assert smooth_calibration_error(p, y, sigma=sigma) == pytest.approx(ref, rel=2e-4)


def test_smooth_ece_closed_form_for_separated_predictions_matches_the_kernel():
    # predictions far apart relative to sigma (gaps 0.15 > 48 sigma): no grid, the exact group sums;
    # the direct reflected-kernel integral agrees; a prediction of exactly 0 is its own mirror image,
    # so only half of its kernel lies in [0, 1]
    p = np.array([0.0, 0.2, 0.2, 0.35, 0.8, 0.8, 0.8])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    sigma = 0.003
    expected = (0.5 * 1.0 + abs(-0.2 + 0.8) + 0.35 + abs(0.2 + 0.2 - 0.8)) / 7
    assert smooth_calibration_error(p, y, sigma=sigma) == pytest.approx(expected, rel=1e-12)
    assert _smece_reference(p, y, sigma, n_t=200001) == pytest.approx(expected, rel=1e-4)
    # weighted: the group sums are weighted, divided by the total weight
    w = np.array([1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 3.0])
    wexp = (0.5 * 1.0 + abs(-0.4 + 0.8) + 0.35 + abs(0.2 + 0.2 - 2.4)) / w.sum()
    assert smooth_calibration_error(p, y, sigma=sigma, weights=w) == pytest.approx(wexp, rel=1e-12)
    # closer predictions take the grid path, which agrees with the kernel too
    q = np.array([0.5, 0.52])
    assert smooth_calibration_error(q, [1.0, 0.0], sigma=sigma) == pytest.approx(
        _smece_reference(q, np.array([1.0, 0.0]), sigma, n_t=200001), rel=1e-3)


def test_smooth_ece_fixed_point_and_behaviour():
    p, y = _data(n=2000, seed=4, power=2.0)
    s = smooth_calibration_error(p, y)
    # the automatic bandwidth is the fixed point smECE_sigma = sigma
    assert smooth_calibration_error(p, y, sigma=s) == pytest.approx(s, abs=1e-5)
    # constant offset of 0.4 on a constant forecast: smECE = 0.4 ... (kernel mass stays in [0,1])
    assert smooth_calibration_error([0.9] * 50, [0.5] * 50, sigma=0.1) == pytest.approx(0.4, rel=1e-6)
    rng = np.random.default_rng(1)
    pc = rng.uniform(size=20000)
    yc = (rng.uniform(size=20000) < pc).astype(float)
    assert smooth_calibration_error(pc, yc) < 0.02 < s


# ----------------------------------------------------------------------------- properties
probs_st = arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 1))


@settings(max_examples=60, deadline=None)
@given(p=probs_st, data=st.data(), norm=st.sampled_from(["l1", "l2", "max"]),
       strategy=st.sampled_from(["uniform", "quantile"]), n_bins=st.integers(1, 20))
def test_ece_in_unit_interval(p, data, norm, strategy, n_bins):
    y = data.draw(arrays(np.float64, p.shape[0], elements=st.floats(0, 1)))
    e = expected_calibration_error(p, y, n_bins=n_bins, norm=norm, strategy=strategy)
    assert 0.0 <= e <= 1.0
    assert 0.0 <= pairwise_calibration_error(p, y, n_bins=n_bins, norm=norm, strategy=strategy) <= 1.0


@settings(max_examples=60, deadline=None)
@given(p=probs_st, data=st.data(), n_bins=st.integers(1, 20))
def test_pairwise_invariant_to_swapping_order(p, data, n_bins):
    q = data.draw(arrays(np.float64, p.shape[0], elements=st.floats(0, 1)))
    flip = data.draw(arrays(np.bool_, p.shape[0]))
    p2 = np.where(flip, 1.0 - p, p)
    q2 = np.where(flip, 1.0 - q, q)
    # 1 - (1 - p) can differ from p by an ulp; compare on values where the swap is exact
    exact = (1.0 - (1.0 - p)) == p
    p, q, p2, q2 = p[exact], q[exact], p2[exact], q2[exact]
    if p.size == 0:
        return
    for norm in ("l1", "l2", "max"):
        assert pairwise_calibration_error(p, q, n_bins=n_bins, norm=norm) == pytest.approx(
            pairwise_calibration_error(p2, q2, n_bins=n_bins, norm=norm), abs=1e-12
        )
    assert preference_accuracy(p, q) == pytest.approx(preference_accuracy(p2, q2), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(p=probs_st, data=st.data(), n_bins=st.integers(1, 20), soft=st.booleans(),
       strategy=st.sampled_from(["uniform", "quantile"]))
def test_brier_decomposition_identity(p, data, n_bins, soft, strategy):
    el = st.floats(0, 1) if soft else st.sampled_from([0.0, 1.0])
    y = data.draw(arrays(np.float64, p.shape[0], elements=el))
    w = data.draw(st.none() | arrays(np.float64, p.shape[0], elements=st.floats(0.1, 5)))
    d = brier_decomposition(p, y, n_bins=n_bins, strategy=strategy, weights=w)
    assert d.brier == pytest.approx(brier_score(p, y, weights=w), abs=1e-12)
    assert d.reliability - d.resolution + d.uncertainty + d.within_bin_variance == pytest.approx(d.brier, abs=1e-12)
    assert d.reliability >= 0 and d.resolution >= -1e-15 and d.uncertainty >= -1e-15


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_vanishes_for_data_drawn_from_predictions(seed):
    rng = np.random.default_rng(seed)
    ece = {}
    for n in (1_000, 100_000):
        p = rng.uniform(size=n)
        y = (rng.uniform(size=n) < p).astype(float)
        ece[n] = expected_calibration_error(p, y)
    # the expected plug-in ECE scales like sqrt(n_bins / n): ~0.03-0.05 at 1e3, ~0.004 at 1e5
    assert ece[100_000] < ece[1_000]
    assert ece[100_000] < 0.01


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_vectorised_equals_loop_and_is_seeded():
    p, y = _data(n=500, seed=9)
    w = np.random.default_rng(2).uniform(0.5, 2, size=500)
    cases = [
        (expected_calibration_error, (p, y), {"norm": "l1"}),
        (expected_calibration_error, (p, y), {"norm": "l2", "weights": w}),
        (expected_calibration_error, (p, y), {"norm": "max", "n_bins": 7}),
        (pairwise_calibration_error, (p, y), {}),
        (brier_score, (p, y), {"weights": w}),
        (negative_log_likelihood, (p, y), {}),
        (preference_accuracy, (p,), {}),
    ]
    for metric, arrs, kw in cases:
        a = bootstrap_ci(metric, *arrs, n_resamples=50, seed=3, **kw)
        b = bootstrap_ci(metric, *arrs, n_resamples=50, seed=3, vectorised=False, **kw)
        assert isinstance(a, ConfidenceInterval)
        assert a.low == pytest.approx(b.low, abs=1e-12) and a.high == pytest.approx(b.high, abs=1e-12)
        assert a == bootstrap_ci(metric, *arrs, n_resamples=50, seed=3, **kw)
    c = bootstrap_ci(expected_calibration_error, p, y, n_resamples=50, seed=4)
    assert (c.low, c.high) != (a.low, a.high)


def test_bootstrap_interval_covers_and_basic_method():
    p, y = _data(n=2000, seed=1, power=2.0)
    ci = bootstrap_ci(brier_score, p, y, n_resamples=400, confidence=0.9, method="percentile")
    assert ci.low < ci.estimate < ci.high and ci.confidence == 0.9
    se = np.std((p - y) ** 2) / math.sqrt(2000)
    assert ci.high - ci.low == pytest.approx(2 * 1.645 * se, rel=0.2)
    basic = bootstrap_ci(brier_score, p, y, n_resamples=400, confidence=0.9, method="basic")
    assert basic.low == pytest.approx(2 * ci.estimate - ci.high)
    # quantile / smooth metrics take the per-resample loop
    q = bootstrap_ci(expected_calibration_error, p, y, n_resamples=20, strategy="quantile")
    assert q.low <= q.high
    assert list(ci.to_pandas().columns)[:4] == ["estimate", "low", "high", "confidence"]


def test_bootstrap_refuses_per_item_keyword_arrays():
    # targets= as a keyword was not resampled (the vectorised path even ignored it): a silently
    # wrong interval. Passed positionally it is resampled with the probabilities.
    p, y = _data(n=40, seed=5)
    with pytest.raises(ValueError, match="targets looks like a per-item array"):
        bootstrap_ci(pairwise_calibration_error, p, targets=y, n_resamples=20)
    with pytest.raises(ValueError, match="labels looks like a per-item array"):
        bootstrap_ci(expected_calibration_error, p, labels=y, n_resamples=20, vectorised=False)
    ci = bootstrap_ci(pairwise_calibration_error, p, y, n_resamples=20)
    assert ci.estimate == pairwise_calibration_error(p, y)


def test_bootstrap_zero_weight_resample_is_an_error_on_both_paths():
    # vectorised path used to return a NaN interval, the loop path a ValueError
    p, y, w = [0.2, 0.9, 0.4, 0.3], [0, 1, 1, 0], [0.0, 0.0, 0.0, 1.0]
    for metric in (expected_calibration_error, brier_score):
        for vectorised in (True, False):
            with pytest.raises(ValueError, match="weights: a bootstrap resample drew only items"):
                bootstrap_ci(metric, p, y, weights=w, n_resamples=50, vectorised=vectorised)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"probs": [0.1, 1.2], "labels": [0, 1]}, "probs"),
        ({"probs": [0.1, -0.1], "labels": [0, 1]}, "probs"),
        ({"probs": [0.1, 0.2], "labels": [0, 2]}, "labels"),
        ({"probs": [0.1, np.nan], "labels": [0, 1]}, "probs"),
        ({"probs": [0.1, 0.2], "labels": [np.inf, 1]}, "labels"),
        ({"probs": [0.1, 0.2, 0.3], "labels": [0, 1]}, "probs and labels"),
        ({"probs": [], "labels": []}, "probs"),
        ({"probs": [0.1], "labels": [1], "n_bins": 0}, "n_bins"),
        ({"probs": [0.1], "labels": [1], "strategy": "kmeans"}, "strategy"),
        ({"probs": [0.1], "labels": [1], "norm": "l3"}, "norm"),
        ({"probs": [0.1], "labels": [1], "weights": [-1.0]}, "weights"),
        ({"probs": [0.1, 0.2], "labels": [1, 0], "weights": [1.0]}, "weights"),
        ({"probs": [[0.1]], "labels": [[1]]}, "probs"),
    ],
)
def test_bad_input_ece(kwargs, match):
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(**kwargs)


def test_bad_input_other_functions():
    with pytest.raises(ValueError, match="targets"):
        pairwise_calibration_error([0.2], [1.5])
    with pytest.raises(ValueError, match="probs"):
        brier_score([np.nan], [1])
    with pytest.raises(ValueError, match="labels"):
        negative_log_likelihood([0.5], [-1])
    with pytest.raises(ValueError, match="logits"):
        negative_log_likelihood_from_logits([np.inf], [1])
    with pytest.raises(ValueError, match="sigma"):
        smooth_calibration_error([0.5], [1], sigma=0.0)
    with pytest.raises(ValueError, match="n_bins"):
        reliability_table([0.5], [1], n_bins=0)
    with pytest.raises(ValueError, match="strategy"):
        brier_decomposition([0.5], [1], strategy="x")
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(brier_score, [0.5], [1], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(brier_score, [0.5], [1], confidence=1.0)
    with pytest.raises(ValueError, match="arrays"):
        bootstrap_ci(brier_score, [0.5, 0.2], [1])
    with pytest.raises(TypeError, match="n_bins"):
        expected_calibration_error([0.5], [1], n_bins=2.5)


@pytest.mark.parametrize("sigma", [1e-9, 1e-7, 1e-3])
def test_smooth_ece_bounded_for_a_bandwidth_below_the_grid_spacing(sigma):
    # smECE_sigma <= mean |y - p| for any sigma; with sigma far below the finest grid spacing the
    # sampled kernel used to carry a mass of h / (sigma sqrt(2 pi)) (42.8 for sigma = 1e-9)
    assert smooth_calibration_error([0.7], [1.0], sigma=sigma) == pytest.approx(0.3, rel=1e-9)
    p, y = [0.2, 0.3, 0.9], [0.0, 1.0, 1.0]
    assert smooth_calibration_error(p, y, sigma=sigma) <= np.mean(np.abs(np.subtract(y, p))) + 1e-12

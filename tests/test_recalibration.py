"""Tests for auq.calibration.recalibration (real values, not smoke)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

from auq.calibration.recalibration import (
    BetaCalibration,
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
)

ALL = [TemperatureScaling, PlattScaling, IsotonicCalibration, HistogramBinning, BetaCalibration]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def nll_from_logits(x, y):
    return float(np.mean(np.logaddexp(0.0, x) - y * x))


def nll_from_probs(p, y, eps=1e-15):
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ece(p, y, n_bins=15):
    """Plain equal-width ECE, written independently of the library."""
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(p[m].mean() - y[m].mean())
    return total


@pytest.fixture(scope="module")
def tempered():
    """Scores z, labels drawn from sigma(z / 3): over-confident by a temperature of 3."""
    rng = np.random.default_rng(12345)
    n = 20_000
    z = rng.normal(0.0, 4.0, n)
    y = (rng.random(n) < sigmoid(z / 3.0)).astype(float)
    return z, y


@pytest.fixture(scope="module")
def preference(tempered):
    """The same data as preference pairs: each pair oriented so its label is 1."""
    z, y = tempered
    return np.where(y == 1, z, -z), np.ones_like(y)


# ----------------------------------------------------------------------------- temperature / Platt


def test_temperature_recovers_true_temperature(tempered):
    z, y = tempered
    ts = TemperatureScaling().fit(z, y)
    assert abs(ts.temperature_ - 3.0) / 3.0 < 0.05
    p = ts.predict_proba(z)
    np.testing.assert_allclose(p, sigmoid(z / ts.temperature_), rtol=1e-12)
    assert nll_from_probs(p, y) < nll_from_logits(z, y) - 0.05
    assert ece(p, y) < 0.02 < ece(sigmoid(z), y)
    np.testing.assert_allclose(ts.predict_logits(z), z / ts.temperature_, rtol=1e-12)
    np.testing.assert_array_equal(ts.transform(z[:10]), p[:10])


def test_temperature_is_the_nll_minimiser(tempered):
    """The fitted T has zero derivative of the NLL and beats its neighbours."""
    z, y = tempered
    t = TemperatureScaling().fit(z, y).temperature_
    f = lambda T: nll_from_logits(z / T, y)  # noqa: E731
    assert f(t) <= min(f(t * 1.001), f(t / 1.001))
    grad_beta = np.mean((sigmoid(z / t) - y) * z)
    assert abs(grad_beta) < 1e-8


def test_platt_recovers_slope_and_intercept(tempered):
    z, y = tempered
    ps = PlattScaling().fit(z, y)
    assert abs(ps.coef_ - 1 / 3) / (1 / 3) < 0.05
    assert abs(ps.intercept_) < 0.05
    np.testing.assert_allclose(ps.predict_logits(z), ps.coef_ * z + ps.intercept_, rtol=1e-12)
    assert nll_from_probs(ps.predict_proba(z), y) < nll_from_logits(z, y) - 0.05


def test_platt_matches_unpenalised_logistic_regression(tempered):
    from sklearn.linear_model import LogisticRegression

    z, y = tempered
    ps = PlattScaling().fit(z, y)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(z[:, None], y)
    assert abs(ps.coef_ - lr.coef_[0, 0]) < 1e-6
    assert abs(ps.intercept_ - lr.intercept_[0]) < 1e-6


@settings(max_examples=60, deadline=None)
@given(
    data=st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.floats(-30, 30, allow_nan=False)),
            arrays(np.float64, n, elements=st.floats(0, 1, allow_nan=False)),
        )
    )
)
def test_temperature_never_raises_nll_on_fit_set(data):
    z, y = data
    ts = TemperatureScaling().fit(z, y)
    assert 0 < ts.temperature_ < math.inf
    assert nll_from_logits(z / ts.temperature_, y) <= nll_from_logits(z, y) + 1e-12


def test_temperature_finite_at_extreme_logits():
    z = np.array([-1e4, -3.0, 0.5, 1e4, 2.0, -1.0])
    y = np.array([0, 1, 0, 1, 1, 0.0])
    for est in (
        TemperatureScaling(),
        PlattScaling(),
        BetaCalibration(input="logit"),
        IsotonicCalibration(input="logit"),
        HistogramBinning(input="logit"),
    ):
        p = est.fit(z, y).predict_proba(z)
        assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    lg = BetaCalibration(input="logit").fit(z, y).predict_logits(z)
    assert np.isfinite(lg).all()


# ----------------------------------------------------------------------------- preference pairs


def test_symmetrize_all_ones_labels_gives_true_temperature(tempered, preference):
    z, y = tempered
    zp, ones = preference
    t_sym = TemperatureScaling(symmetrize=True).fit(zp, ones).temperature_
    t_raw = TemperatureScaling(symmetrize=False).fit(zp, ones).temperature_
    t_ref = TemperatureScaling().fit(z, y).temperature_
    assert 0 < t_sym < math.inf
    assert abs(t_sym - 3.0) / 3.0 < 0.05
    # the mirrored NLL equals the original one, so all three fits coincide
    assert t_sym == pytest.approx(t_raw, rel=1e-7)
    assert t_sym == pytest.approx(t_ref, rel=1e-7)


def test_symmetrize_equals_explicit_mirroring(preference):
    zp, ones = preference
    zz = np.concatenate([zp, -zp])
    yy = np.concatenate([ones, 0 * ones])
    ps_sym = PlattScaling(symmetrize=True).fit(zp, ones)
    ps_aug = PlattScaling().fit(zz, yy)
    assert ps_sym.intercept_ == 0.0
    assert abs(ps_aug.intercept_) < 1e-8
    assert ps_sym.coef_ == pytest.approx(ps_aug.coef_, rel=1e-6)
    assert abs(ps_sym.coef_ - 1 / 3) / (1 / 3) < 0.05
    # symmetrised beta calibration is temperature scaling on logit p: a = b = 1/T, c = 0
    bc = BetaCalibration(symmetrize=True, input="logit").fit(zp, ones)
    t = TemperatureScaling().fit(zp, ones).temperature_
    assert bc.a_ == bc.b_ and bc.c_ == 0.0
    assert bc.a_ == pytest.approx(1 / t, rel=1e-6)
    bc_aug = BetaCalibration(input="logit").fit(zz, yy)
    assert bc_aug.a_ == pytest.approx(bc.a_, rel=1e-4)
    assert bc_aug.b_ == pytest.approx(bc.b_, rel=1e-4)
    assert abs(bc_aug.c_) < 1e-4


@pytest.mark.parametrize("cls", [IsotonicCalibration, HistogramBinning])
def test_symmetrized_nonparametric_maps_are_antisymmetric(cls, preference):
    zp, ones = preference
    p = sigmoid(zp[:3000])
    est = cls(symmetrize=True).fit(p, ones[:3000])
    grid = np.linspace(0.0, 1.0, 101)[1:-1]
    grid = grid[np.abs(grid - 0.5) > 1e-9]
    if cls is HistogramBinning:  # keep off the bin edges, where [a, b) conventions differ
        grid = grid + 0.003
    np.testing.assert_allclose(est.predict_proba(grid), 1 - est.predict_proba(1 - grid), atol=1e-12)


@pytest.mark.parametrize(
    "cls", [PlattScaling, IsotonicCalibration, HistogramBinning, BetaCalibration]
)
def test_one_class_labels_are_refused_without_symmetrize(cls, preference):
    zp, ones = preference
    scores = zp[:100] if cls is PlattScaling else sigmoid(zp[:100])
    with pytest.raises(ValueError, match="labels are all 1.*symmetrize=True"):
        cls().fit(scores, ones[:100])
    cls(symmetrize=True).fit(scores, ones[:100])  # fine


def test_separable_fit_set_logs_and_bounds_temperature(caplog):
    with caplog.at_level(logging.WARNING, logger="auq.calibration.recalibration"):
        ts = TemperatureScaling().fit([1.0, 2.0, 3.0], [1, 1, 1])
    assert 0 < ts.temperature_ < 1e-6
    assert "separable" in caplog.text


# ----------------------------------------------------------------------------- reduce miscalibration


@pytest.mark.parametrize(
    "est",
    [
        TemperatureScaling(),
        PlattScaling(),
        IsotonicCalibration(input="logit"),
        HistogramBinning(input="logit"),
        HistogramBinning(input="logit", strategy="quantile"),
        BetaCalibration(input="logit"),
    ],
    ids=lambda e: repr(e),
)
def test_recalibrators_reduce_ece_on_held_out_half(est, tempered):
    z, y = tempered
    half = z.size // 2
    est.fit(z[:half], y[:half])
    p_cal = est.predict_proba(z[half:])
    p_raw = sigmoid(z[half:])
    y_test = y[half:]
    assert ece(p_raw, y_test) > 0.08
    assert ece(p_cal, y_test) < 0.03
    assert np.mean((p_cal - y_test) ** 2) < np.mean((p_raw - y_test) ** 2)


# ----------------------------------------------------------------------------- isotonic


def test_isotonic_is_monotone_and_matches_sklearn():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(float)
    w = rng.integers(1, 4, 500).astype(float)
    iso = IsotonicCalibration().fit(p, y, sample_weight=w)
    grid = np.linspace(-0.0, 1.0, 1001)
    out = iso.predict_proba(grid)
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0 and out.max() <= 1
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y, sample_weight=w)
    np.testing.assert_allclose(out, ref.predict(grid), atol=1e-15)
    # on margins: same fit, since sigma is monotone
    z = np.log(p) - np.log1p(-p)
    iso_z = IsotonicCalibration(input="logit").fit(z, y, sample_weight=w)
    np.testing.assert_allclose(iso_z.predict_proba(z), iso.predict_proba(p), atol=1e-12)


# ----------------------------------------------------------------------------- histogram binning


def test_histogram_binning_equals_per_bin_label_means():
    rng = np.random.default_rng(1)
    p = rng.random(400) * 0.7  # bins above 0.7 stay empty
    y = rng.random(400)  # soft labels
    hb = HistogramBinning(n_bins=10).fit(p, y)
    edges = np.linspace(0, 1, 11)
    for b in range(10):
        m = (p >= edges[b]) & (p < edges[b + 1])
        want = y[m].mean() if m.any() else (edges[b] + edges[b + 1]) / 2
        assert hb.bin_values_[b] == pytest.approx(want, abs=1e-14)
        assert hb.bin_counts_[b] == m.sum()
    assert hb.bin_values_[9] == 0.95  # empty bin: its midpoint
    q = np.array([0.0, 0.05, 0.1, 0.15, 0.999, 1.0])
    expected = hb.bin_values_[[0, 0, 1, 1, 9, 9]]  # inner edge -> upper bin; 1.0 -> last bin
    np.testing.assert_array_equal(hb.predict_proba(q), expected)


def test_histogram_quantile_bins_and_weights():
    rng = np.random.default_rng(2)
    p = rng.beta(2, 5, 1000)
    y = (rng.random(1000) < p).astype(float)
    hb = HistogramBinning(n_bins=5, strategy="quantile").fit(p, y)
    assert hb.bin_edges_[0] == 0 and hb.bin_edges_[-1] == 1
    np.testing.assert_allclose(hb.bin_counts_, 200, atol=1)
    idx = np.searchsorted(hb.bin_edges_[1:-1], p, side="right")
    for b in range(5):
        assert hb.bin_values_[b] == pytest.approx(y[idx == b].mean(), abs=1e-14)
    # repeated scores merge edges
    hb2 = HistogramBinning(n_bins=10, strategy="quantile").fit(
        np.r_[np.full(90, 0.3), p[:10]], np.r_[np.ones(50), np.zeros(50)]
    )
    assert hb2.bin_edges_.size < 11 and np.all(np.diff(hb2.bin_edges_) > 0)


# ----------------------------------------------------------------------------- beta calibration


def test_beta_calibration_recovers_beta_map():
    rng = np.random.default_rng(3)
    n = 20_000
    p = rng.uniform(0.01, 0.99, n)
    a, b, c = 2.0, 0.5, 0.3
    q = sigmoid(a * np.log(p) - b * np.log1p(-p) + c)
    y = (rng.random(n) < q).astype(float)
    bc = BetaCalibration().fit(p, y)
    assert bc.a_ == pytest.approx(a, rel=0.1)
    assert bc.b_ == pytest.approx(b, rel=0.15)
    assert bc.c_ == pytest.approx(c, abs=0.15)
    nll_cal = nll_from_probs(bc.predict_proba(p), y)
    assert nll_cal < nll_from_probs(p, y) - 0.02
    assert nll_cal <= nll_from_probs(q, y) + 1e-9  # the MLE beats the true map in-sample
    assert nll_cal > nll_from_probs(q, y) - 0.005
    # logit input gives the same fit
    z = np.log(p) - np.log1p(-p)
    bz = BetaCalibration(input="logit").fit(z, y)
    np.testing.assert_allclose([bz.a_, bz.b_, bz.c_], [bc.a_, bc.b_, bc.c_], rtol=1e-6)
    np.testing.assert_allclose(bz.predict_proba(z), bc.predict_proba(p), atol=1e-9)


def test_beta_calibration_drops_a_negative_coefficient():
    rng = np.random.default_rng(4)
    n = 5000
    p = rng.uniform(0.01, 0.99, n)
    q = sigmoid(-0.7 * np.log(p) - 2.0 * np.log1p(-p))  # a < 0: not monotone
    y = (rng.random(n) < q).astype(float)
    bc = BetaCalibration().fit(p, y)
    assert bc.a_ == 0.0 and bc.b_ > 0
    out = bc.predict_proba(np.linspace(0.0, 1.0, 201))
    assert np.all(np.diff(out) >= 0)
    # the refit is the one-feature logistic regression on -ln(1-p)
    ps = PlattScaling().fit(-np.log1p(-p), y)
    assert bc.b_ == pytest.approx(ps.coef_, rel=1e-6)
    assert bc.c_ == pytest.approx(ps.intercept_, rel=1e-6, abs=1e-8)


# ----------------------------------------------------------------------------- sklearn protocol


@pytest.mark.parametrize("cls", ALL)
def test_clone_get_params_round_trip(cls, tempered):
    z, y = tempered
    est = cls(symmetrize=True, input="logit")
    params = est.get_params()
    assert params["symmetrize"] is True and params["input"] == "logit"
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    est.fit(z[:2000], y[:2000])
    again = clone(est)
    with pytest.raises(NotFittedError):
        again.predict_proba(z[:5])
    again.fit(z[:2000], y[:2000])
    np.testing.assert_array_equal(again.predict_proba(z[:50]), est.predict_proba(z[:50]))
    assert est.set_params(symmetrize=False) is est and est.get_params()["symmetrize"] is False


@pytest.mark.parametrize("cls", ALL)
def test_unfitted_error(cls):
    with pytest.raises(NotFittedError):
        cls().predict_proba([0.2, 0.4])


@pytest.mark.parametrize("cls", ALL)
def test_integer_weights_equal_replication(cls, tempered):
    z, y = tempered
    z, y = z[:600], y[:600]
    w = np.random.default_rng(5).integers(0, 4, z.size)
    a = cls(input="logit").fit(z, y, sample_weight=w)
    b = cls(input="logit").fit(np.repeat(z, w), np.repeat(y, w))
    grid = np.linspace(-8, 8, 37)
    np.testing.assert_allclose(a.predict_proba(grid), b.predict_proba(grid), atol=1e-6)


@pytest.mark.parametrize("cls", ALL)
def test_torch_in_torch_out(cls, tempered):
    z, y = tempered
    est = cls(input="logit").fit(torch.tensor(z[:1000]), list(y[:1000]))
    t = torch.tensor(z[:20], dtype=torch.float32)
    out = est.predict_proba(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), est.predict_proba(z[:20]), atol=1e-6)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", ALL)
def test_bad_input_errors_name_the_argument(cls):
    est = cls(input="prob")
    with pytest.raises(ValueError, match="scores contains 1 NaN"):
        est.fit([0.2, np.nan], [0, 1])
    with pytest.raises(ValueError, match="scores and labels must have the same shape"):
        est.fit([0.2, 0.3, 0.4], [0, 1])
    with pytest.raises(ValueError, match="scores is empty"):
        est.fit([], [])
    with pytest.raises(ValueError, match="labels must be labels in \\[0, 1\\]"):
        est.fit([0.2, 0.3], [0, 2])
    with pytest.raises(ValueError, match="scores must be probabilities"):
        est.fit([0.2, 1.3], [0, 1])
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        est.fit([0.2, 0.3], [0, 1], sample_weight=[1, -1])
    with pytest.raises(ValueError, match="input must be one of"):
        cls(input="probs").fit([0.2, 0.3], [0, 1])
    with pytest.raises(TypeError, match="symmetrize must be a bool"):
        cls(symmetrize="yes").fit([0.2, 0.3], [0, 1])
    fitted = cls(input="prob").fit([0.2, 0.3, 0.7], [0, 1, 1])
    with pytest.raises(ValueError, match="scores contains 1 infinite"):
        fitted.predict_proba([0.2, np.inf])
    with pytest.raises(ValueError, match="scores must be 1-D"):
        fitted.predict_proba([[0.2, 0.3]])


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="init must be > 0"):
        TemperatureScaling(init=0.0).fit([1.0, -1.0], [1, 0])
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        PlattScaling(max_iter=0).fit([1.0, -1.0], [1, 0])
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        HistogramBinning(n_bins=0).fit([0.1, 0.9], [1, 0])
    with pytest.raises(ValueError, match="strategy must be one of"):
        HistogramBinning(strategy="equal").fit([0.1, 0.9], [1, 0])


def test_histogram_binning_edges_follow_the_binned_metrics():
    # p = 0.3 lies on the edge 3/10; like every binned metric it belongs to the bin above it
    # (np.linspace(0, 1, 11)[3] is 0.30000000000000004 and used to put it in the bin below)
    from auq.calibration import reliability_table

    p, y = [0.25, 0.3, 0.35, 0.6, 0.7, 0.95], [0, 1, 1, 0, 1, 1]
    for n_bins in (10, 20):
        hb = HistogramBinning(n_bins=n_bins).fit(p, y)
        table = reliability_table(p, y, n_bins=n_bins)
        np.testing.assert_array_equal(hb.bin_edges_, np.arange(n_bins + 1) / n_bins)
        ne = table.nonempty
        np.testing.assert_array_equal(hb.bin_values_[ne], table.observed_frequency[ne])
    assert HistogramBinning(n_bins=10).fit(p, y).predict_proba([0.3, 0.6, 0.7]).tolist() == [1, 0, 1]

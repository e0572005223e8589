"""Bootstrap interval methods: BCa against scipy, and what each method does to a biased ECE."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from auq.calibration import brier_score, expected_calibration_error, pairwise_calibration_error
from auq.calibration.bootstrap import bootstrap_ci


def _calibrated_pairs(seed: int, n: int = 100):
    rng = np.random.default_rng(seed)
    m = rng.normal(scale=1.5, size=n)
    q = (rng.random(n) < 1 / (1 + np.exp(-m))).astype(float)
    return 1 / (1 + np.exp(-m)), q


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_bca_equals_scipy_on_the_same_resamples(confidence):
    x = np.random.default_rng(0).lognormal(size=60)  # skewed: z0 and the acceleration are not 0
    ci = bootstrap_ci(np.mean, x, n_resamples=2000, seed=1, method="bca", confidence=confidence)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=0, method="BCa", confidence_level=confidence,
        bootstrap_result=SimpleNamespace(bootstrap_distribution=ci.distribution),
    ).confidence_interval  # fmt: skip
    assert ci.method == "bca" and ci.distribution.shape == (2000,)
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high), rel=1e-12, abs=1e-12)
    pct = bootstrap_ci(np.mean, x, n_resamples=2000, seed=1, method="percentile", confidence=confidence)
    assert pct.low < ci.low and pct.high < ci.high  # right skew: BCa moves both bounds up
    # and on independent resamples scipy's own BCa agrees within Monte-Carlo error
    own = stats.bootstrap((x,), np.mean, n_resamples=20000, method="BCa", confidence_level=confidence,
                          rng=np.random.default_rng(5)).confidence_interval  # fmt: skip
    big = bootstrap_ci(np.mean, x, n_resamples=20000, seed=5, method="bca", confidence=confidence)
    assert (big.low, big.high) == pytest.approx((own.low, own.high), abs=0.02 * x.std())


@pytest.mark.parametrize(
    "metric, kw",
    [(expected_calibration_error, {"n_bins": 10}), (brier_score, {}), (pairwise_calibration_error, {"n_bins": 20})],
)
@pytest.mark.parametrize("n", [150, 2300])  # leave-one-out, and delete-a-group above 2000 items
def test_bca_vectorised_jackknife_equals_the_loop(metric, kw, n):
    rng = np.random.default_rng(n)
    p = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p**1.5).astype(float)
    a = bootstrap_ci(metric, p, y, n_resamples=200, seed=2, method="bca", **kw)
    b = bootstrap_ci(metric, p, y, n_resamples=200, seed=2, method="bca", vectorised=False, **kw)
    assert (a.low, a.high) == pytest.approx((b.low, b.high), abs=1e-12)
    assert a.method == b.method == "bca"


def test_basic_is_the_percentile_interval_mirrored_about_the_estimate():
    p, q = _calibrated_pairs(3, n=300)
    pct = bootstrap_ci(pairwise_calibration_error, p, q, n_bins=20, n_resamples=300, seed=0, method="percentile")
    basic = bootstrap_ci(pairwise_calibration_error, p, q, n_bins=20, n_resamples=300, seed=0, method="basic")
    assert pct.method == "percentile" and basic.method == "basic"
    assert basic.low == pytest.approx(2 * pct.estimate - pct.high, abs=1e-15)
    assert basic.high == pytest.approx(2 * pct.estimate - pct.low, abs=1e-15)


def test_biased_ece_the_interval_methods_and_their_estimate():
    """ECE of calibrated pairs is biased upwards: its resamples lie mostly above the estimate.

    Seed 141: 2.6% of the resamples fall below the estimate, just above α/2 — the percentile
    interval lies above the estimate, BCa (levels moved down by z0) contains it. Seed 46: 0.2% lie
    below — the percentile interval lies above, the basic one below, and BCa shrinks to a sliver
    below the estimate: no bootstrap interval contains an estimate that bias dominates, and
    ``contains_estimate`` says so.
    """
    p, q = _calibrated_pairs(141)
    kw = {"n_bins": 20, "n_resamples": 500, "seed": 141}
    pct = bootstrap_ci(pairwise_calibration_error, p, q, method="percentile", **kw)
    bca = bootstrap_ci(pairwise_calibration_error, p, q, method="bca", **kw)
    assert np.mean(pct.distribution < pct.estimate) == pytest.approx(0.026)
    assert pct.low > pct.estimate and not pct.contains_estimate
    assert bca.contains_estimate and bca.low < pct.low
    default = bootstrap_ci(pairwise_calibration_error, p, q, n_bins=20, n_resamples=500, seed=141)
    assert default.method == "bca" and default.contains_estimate  # the default contains its estimate
    assert (default.low, default.high) == (bca.low, bca.high)

    p, q = _calibrated_pairs(46)
    kw["seed"] = 46
    cis = {m: bootstrap_ci(pairwise_calibration_error, p, q, method=m, **kw) for m in ("percentile", "basic", "bca")}
    est = cis["bca"].estimate
    assert np.mean(cis["bca"].distribution < est) == pytest.approx(0.002)
    assert cis["percentile"].low > est and cis["basic"].high < est and cis["bca"].high < est
    assert not any(c.contains_estimate for c in cis.values())
    assert cis["bca"].high - cis["bca"].low < 0.01 * (cis["percentile"].high - cis["percentile"].low)


def test_bca_undefined_falls_back_to_percentile_and_says_so(caplog):
    x = np.arange(30.0)
    with caplog.at_level(logging.WARNING, logger="auq.calibration.bootstrap"):
        # distinct values: every resample (with repeats) has fewer than the data
        ci = bootstrap_ci(lambda a: float(len(np.unique(a))), x, n_resamples=200, seed=0, method="bca")
    assert ci.method == "percentile" and "BCa interval undefined" in caplog.text


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci(brier_score, [0.2, 0.7], [0, 1], method="studentized")

"""Tests for auq.calibration.selective (hand-computed values and references)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from auq.calibration.selective import (
    RiskCoverage,
    aurc,
    eaurc,
    error_detection_auroc,
    ood_auroc,
    risk_coverage_curve,
)


def oracle_hard(r):
    """Geifman et al. (2019): AURC of the optimal ordering for error rate r."""
    return r + (1 - r) * math.log(1 - r)


def integrate_numerically(cov_points, cum_err_points, n_grid=400_001):
    """∫ E(c)/c dc with E linearly interpolated between (coverage, accepted error) points."""
    c = np.linspace(0, 1, n_grid)[1:]
    e = np.interp(c, np.r_[0.0, cov_points], np.r_[0.0, cum_err_points])
    r = e / c
    return float(np.sum((r[1:] + r[:-1]) / 2 * np.diff(c)) + r[0] * c[0])


# ----------------------------------------------------------------------------- the curve


def test_hand_computed_curve_on_five_items():
    u = [0.1, 0.4, 0.2, 0.9, 0.5]
    correct = [1, 0, 1, 1, 0]
    rc = risk_coverage_curve(u, correct)
    assert isinstance(rc, RiskCoverage)
    # accepted in order 0.1(ok) 0.2(ok) 0.4(wrong) 0.5(wrong) 0.9(ok)
    np.testing.assert_allclose(rc.coverage, [0.2, 0.4, 0.6, 0.8, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(rc.risk, [0, 0, 1 / 3, 2 / 4, 2 / 5], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(rc.threshold, [0.1, 0.2, 0.4, 0.5, 0.9])
    # exact area: segments 3, 4 enter errors, segment 5 a right answer:
    # [-0.4 ln(0.6/0.4) + 0.2] + [-0.4 ln(0.8/0.6) + 0.2] + [0.4 ln(1/0.8)] = 0.4 (1 + ln 0.625)
    assert rc.aurc == pytest.approx(0.4 * (1 + math.log(0.625)), abs=1e-15)
    assert aurc(u, correct) == rc.aurc
    assert rc.aurc == pytest.approx(
        integrate_numerically(rc.coverage, rc.coverage * rc.risk), abs=1e-9
    )
    # E-AURC: the oracle for r = 0.4
    assert eaurc(u, correct) == pytest.approx(rc.aurc - oracle_hard(0.4), abs=1e-15)
    df = rc.to_pandas()
    assert list(df.columns) == ["coverage", "risk", "threshold"]
    assert df.attrs["aurc"] == rc.aurc and len(df) == 5


def test_ties_form_one_point_and_do_not_depend_on_order():
    rc = risk_coverage_curve([0.1, 0.3, 0.3], [1, 0, 1])
    np.testing.assert_allclose(rc.coverage, [1 / 3, 1.0])
    np.testing.assert_allclose(rc.risk, [0.0, 1 / 3])
    # tied group enters in proportion: -(1/6) ln 3 + (1/2)(2/3)
    assert rc.aurc == pytest.approx(1 / 3 - math.log(3) / 6, abs=1e-15)
    rng = np.random.default_rng(0)
    u = rng.integers(0, 6, 200).astype(float)
    c = rng.random(200)
    w = rng.random(200)
    base = risk_coverage_curve(u, c, weights=w)
    for _ in range(5):
        perm = rng.permutation(200)
        other = risk_coverage_curve(u[perm], c[perm], weights=w[perm])
        np.testing.assert_allclose(other.coverage, base.coverage, rtol=1e-13)
        np.testing.assert_allclose(other.risk, base.risk, rtol=1e-13)
        assert other.aurc == pytest.approx(base.aurc, rel=1e-13)
    assert base.coverage.size == 6


def test_tied_aurc_is_the_mean_over_all_tie_breakings():
    u = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0])
    c = np.array([0.9, 0.0, 0.4, 1.0, 0.2, 0.5])
    values = []
    for p1 in itertools.permutations(range(3)):
        for p2 in itertools.permutations(range(2)):
            broken = u.copy()
            broken[:3] += np.array(p1) * 1e-3
            broken[3:5] += np.array(p2) * 1e-3
            values.append(aurc(broken, c))
    assert aurc(u, c) == pytest.approx(np.mean(values), abs=1e-14)


def test_exact_area_matches_numerical_integral_and_discrete_bound():
    rng = np.random.default_rng(1)
    for n in (7, 50, 300):
        u = rng.random(n)
        c = (rng.random(n) < 0.7).astype(float)
        rc = risk_coverage_curve(u, c)
        assert rc.aurc == pytest.approx(
            integrate_numerically(rc.coverage, rc.coverage * rc.risk), abs=2e-8
        )
        # the discrete mean of the risks differs by at most ln(n)/n
        assert abs(rc.risk.mean() - rc.aurc) <= math.log(n) / n


def test_perfect_ordering_gives_oracle_and_zero_eaurc():
    rng = np.random.default_rng(2)
    correct = (rng.random(1000) < 0.8).astype(float)
    r = 1 - correct.mean()
    u = (1 - correct) + 0.1 * rng.random(1000)  # every right answer is more confident
    assert aurc(u, correct) == pytest.approx(oracle_hard(r), abs=1e-14)
    assert eaurc(u, correct) == pytest.approx(0.0, abs=1e-15)
    # the worst ordering, and a random one, are worse
    assert eaurc(-u, correct) > eaurc(rng.random(1000), correct) > 0.01
    # all right or all wrong: AURC is the error rate, E-AURC 0
    assert aurc(u, np.ones(1000)) == 0.0 and aurc(u, np.zeros(1000)) == pytest.approx(1.0)
    assert eaurc(rng.random(10), np.zeros(10)) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    data=st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5])),
            arrays(np.float64, n, elements=st.floats(0, 1)),
            arrays(np.float64, n, elements=st.floats(0.01, 5)),
        )
    )
)
def test_eaurc_nonnegative_and_aurc_bounded(data):
    u, c, w = data
    a = aurc(u, c, weights=w)
    e = eaurc(u, c, weights=w)
    assert -1e-12 <= e <= a + 1e-12
    assert 0.0 <= a <= 1.0 + 1e-12


def test_integer_weights_equal_replication():
    rng = np.random.default_rng(3)
    u = rng.integers(0, 10, 80).astype(float)
    c = rng.random(80)
    w = rng.integers(0, 4, 80)
    a = risk_coverage_curve(u, c, weights=w)
    b = risk_coverage_curve(np.repeat(u, w), np.repeat(c, w))
    np.testing.assert_allclose(a.coverage, b.coverage, rtol=1e-12)
    np.testing.assert_allclose(a.risk, b.risk, rtol=1e-12)
    assert a.aurc == pytest.approx(b.aurc, rel=1e-12)
    assert eaurc(u, c, weights=w) == pytest.approx(
        eaurc(np.repeat(u, w), np.repeat(c, w)), rel=1e-12
    )
    assert error_detection_auroc(u, c, weights=w) == pytest.approx(
        error_detection_auroc(np.repeat(u, w), np.repeat(c, w)), rel=1e-12
    )


# ----------------------------------------------------------------------------- AUROC


def test_error_detection_auroc_matches_sklearn():
    rng = np.random.default_rng(4)
    for n in (10, 500, 5000):
        correct = (rng.random(n) < 0.6).astype(float)
        u = np.round(rng.random(n) + 0.3 * (1 - correct), 2)  # many ties
        ours = error_detection_auroc(u, correct)
        assert abs(ours - roc_auc_score(1 - correct, u)) < 1e-12
        w = rng.random(n)
        assert (
            abs(
                error_detection_auroc(u, correct, weights=w)
                - roc_auc_score(1 - correct, u, sample_weight=w)
            )
            < 1e-12
        )
    assert error_detection_auroc([0.9, 0.1, 0.5, 0.2], [0, 1, 0, 1]) == 1.0
    assert error_detection_auroc([0.9, 0.1, 0.5, 0.2], [1, 0, 1, 0]) == 0.0
    assert error_detection_auroc([0.3, 0.3], [1, 0]) == 0.5


def test_soft_correctness_splits_each_item_into_right_and_wrong_mass():
    rng = np.random.default_rng(5)
    u = np.round(rng.random(300), 1)
    c = rng.random(300)
    ref = roc_auc_score(
        np.r_[np.ones(300), np.zeros(300)], np.r_[u, u], sample_weight=np.r_[1 - c, c]
    )
    assert abs(error_detection_auroc(u, c) - ref) < 1e-12


def test_ood_auroc_matches_sklearn_and_mann_whitney():
    rng = np.random.default_rng(6)
    s_in = np.round(rng.normal(0, 1, 700), 1)
    s_out = np.round(rng.normal(0.8, 1, 300), 1)
    ours = ood_auroc(s_in, s_out)
    ref = roc_auc_score(np.r_[np.zeros(700), np.ones(300)], np.r_[s_in, s_out])
    assert abs(ours - ref) < 1e-12
    u_stat = mannwhitneyu(s_out, s_in).statistic
    assert abs(ours - u_stat / (700 * 300)) < 1e-12
    assert ood_auroc([0.1, 0.2, 0.3], [0.25, 0.9]) == pytest.approx(5 / 6, abs=1e-15)
    assert ood_auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0])) == 1.0


def test_accepts_torch_and_lists():
    u = torch.tensor([0.1, 0.4, 0.2, 0.9, 0.5], dtype=torch.float32)
    c = torch.tensor([1, 0, 1, 1, 0])
    rc = risk_coverage_curve(u, c)
    assert rc.risk.dtype == np.float64
    np.testing.assert_allclose(rc.risk, [0, 0, 1 / 3, 0.5, 0.4], atol=1e-15)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="uncertainty contains 1 NaN"):
        risk_coverage_curve([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="uncertainty and correct must have the same shape"):
        aurc([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="correct must be labels in \\[0, 1\\]"):
        eaurc([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="uncertainty is empty"):
        risk_coverage_curve([], [])
    with pytest.raises(ValueError, match="weights must be non-negative"):
        aurc([0.1, 0.2], [1, 0], weights=[1, -1])
    with pytest.raises(ValueError, match="weights must have length 2"):
        aurc([0.1, 0.2], [1, 0], weights=[1, 1, 1])
    with pytest.raises(ValueError, match="uncertainty must be 1-D"):
        aurc([[0.1, 0.2]], [[1, 0]])
    with pytest.raises(ValueError, match="correct must contain both right and wrong"):
        error_detection_auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="scores_out is empty"):
        ood_auroc([0.1, 0.2], [])
    with pytest.raises(ValueError, match="scores_in contains 1 infinite"):
        ood_auroc([0.1, np.inf], [0.3])
    with pytest.raises(TypeError, match="correct must be an array of numbers"):
        aurc([0.1], "1")

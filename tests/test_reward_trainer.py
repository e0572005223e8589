"""Tests of auq.training.reward_trainer on tiny real backbones (BERT built from a config)."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from dataclasses import replace as dataclasses_replace

import numpy as np
import pytest
import torch
from _launch import run_one_and_two
from _trainer_fixtures import (
    TinyEnsemble,
    TinyEnsembleConfig,
    make_tiny_bert,
    synthetic_dataset,
    synthetic_pairs,
)
from safetensors.torch import load_file

from auq.estimators import decompose
from auq.models import RewardEnsemble, encode_dataset, score
from auq.training import (
    RewardModelTrainer,
    RewardTrainerConfig,
    bootstrap_counts,
    bradley_terry_loss,
    load_checkpoint_state,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    return make_tiny_bert(str(tmp_path_factory.mktemp("bert") / "tiny-bert"), dropout=0.0)


@pytest.fixture(scope="module")
def bert_dropout(tmp_path_factory) -> str:
    return make_tiny_bert(str(tmp_path_factory.mktemp("bertd") / "tiny-bert"), dropout=0.1)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------ config


def test_config_round_trip_and_bad_values(tmp_path):
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path), max_steps=7, lr_scheduler_type="cosine", margin="m", bf16=False
    )
    assert RewardTrainerConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    assert RewardTrainerConfig.from_json(path) == cfg
    assert json.loads(cfg.to_json())["max_steps"] == 7
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        RewardTrainerConfig(output_dir="x", lr_scheduler_type="exotic")
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        RewardTrainerConfig(output_dir="x", per_device_train_batch_size=0)
    with pytest.raises(TypeError, match="gradient_accumulation_steps"):
        RewardTrainerConfig(output_dir="x", gradient_accumulation_steps=1.5)
    with pytest.raises(ValueError, match="bf16"):
        RewardTrainerConfig(output_dir="x", bf16="yes")
    with pytest.raises(ValueError, match="unknown.*learning_rte"):
        RewardTrainerConfig.from_dict({"output_dir": "x", "learning_rte": 1e-3})


def test_bootstrap_counts_are_per_member_resamples():
    c = bootstrap_counts(200, 4, seed=3)
    assert c.shape == (200, 4) and c.dtype == np.float32
    assert np.all(c.sum(axis=0) == 200)  # each member draws n pairs with replacement
    assert np.all(c == np.round(c)) and c.min() >= 0
    # about 1 - 1/e of the pairs are in each member's resample; members differ
    in_bag = (c > 0).mean(axis=0)
    assert np.all(np.abs(in_bag - (1 - math.exp(-1))) < 0.08)
    assert not np.array_equal(c[:, 0], c[:, 1])
    np.testing.assert_array_equal(c, bootstrap_counts(200, 4, seed=3))
    assert not np.array_equal(c, bootstrap_counts(200, 4, seed=4))


# ------------------------------------------------------------------------------------ learning


def test_learns_and_periodic_eval_matches_recomputation(bert, tmp_path):
    train, test = synthetic_dataset(128, seed=1), synthetic_dataset(48, seed=2)
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=4, seed=0, train_trunk=True)
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path),
        num_train_epochs=2,
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        warmup_ratio=0.1,
        weight_decay=0.01,
        logging_steps=2,
        eval_steps=8,
        bootstrap=True,
        max_length=32,
        disable_tqdm=True,
    )
    trainer = RewardModelTrainer(model, cfg, train, eval_dataset=test)
    before = trainer.evaluate()
    result = trainer.train()
    assert result.global_step == 16
    losses = [e["loss"] for e in result.log_history if "loss" in e]
    assert len(losses) == 8
    assert max(losses[-3:]) < 0.5 * losses[0] and losses[0] > 0.5
    evals = [e for e in trainer.log_history if "eval_accuracy" in e]
    assert [e["step"] for e in evals] == [0, 8, 16]  # before training, periodic, final
    for e in evals:
        assert all(math.isfinite(v) for v in e.values())
    m = result.metrics
    assert m["eval_accuracy"] >= 0.9
    assert m["eval_loss"] < before["eval_loss"]
    assert 0 <= m["eval_ece"] <= 1 and m["eval_nll"] > 0
    assert m["eval_epistemic"] >= 0 and m["eval_margin_std"] > 1e-3  # members not collapsed

    # recompute with the models' own scoring code on the same pairs
    preds = score(model, test, batch_size=16, progress=False)
    dec = decompose(preds.rewards_chosen - preds.rewards_rejected)
    assert m["eval_accuracy"] == pytest.approx(float(np.mean(dec.prob > 0.5)), abs=1e-12)
    assert m["eval_epistemic"] == pytest.approx(float(np.mean(dec.epistemic)), rel=1e-4, abs=1e-7)
    assert m["eval_margin_std"] == pytest.approx(float(np.mean(dec.margin_std)), rel=1e-4)
    bt = bradley_terry_loss(
        torch.from_numpy(preds.rewards_chosen), torch.from_numpy(preds.rewards_rejected)
    )
    assert m["eval_loss"] == pytest.approx(float(bt), rel=1e-4)
    # learning-rate schedule: warmup to the peak, then linear decay to 0
    lrs = [e["learning_rate"] for e in result.log_history if "learning_rate" in e]
    assert max(lrs) <= 1e-2 + 1e-12 and lrs[-1] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------ resume


def _resume_config(out: str, **kw) -> RewardTrainerConfig:
    base = dict(
        output_dir=out,
        num_train_epochs=3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=2e-3,
        weight_decay=0.05,
        warmup_steps=2,
        lr_scheduler_type="cosine",
        bootstrap=True,
        save_steps=4,
        logging_steps=1,
        seed=5,
        max_length=32,
        disable_tqdm=True,
    )
    base.update(kw)
    return RewardTrainerConfig(**base)


@pytest.fixture(scope="module")
def uninterrupted(bert_dropout, tmp_path_factory):
    """A 15-step run (40 pairs, batch 4 x accumulation 2, 3 epochs) with checkpoints every 4 steps."""
    out = str(tmp_path_factory.mktemp("run") / "full")
    train = synthetic_dataset(40, seed=1)
    model = RewardEnsemble.from_backbone(
        bert_dropout, kind="heads", n_members=3, seed=0, train_trunk=True
    )
    trainer = RewardModelTrainer(model, _resume_config(out), train)
    result = trainer.train()
    return {"out": out, "train": train, "state": _state(model), "result": result}


def test_resume_mid_epoch_equals_uninterrupted_run(uninterrupted, bert_dropout, tmp_path, monkeypatch):
    assert uninterrupted["result"].global_step == 15
    full = uninterrupted["out"]
    assert sorted(os.listdir(full)) == ["checkpoint-12", "checkpoint-4", "checkpoint-8"]
    state8 = load_checkpoint_state(os.path.join(full, "checkpoint-8"))
    # step 8 is in the middle of epoch 1 (5 steps = 10 micro-batches per epoch)
    assert (state8["epoch"], state8["batches_in_epoch"]) == (1, 6)

    out = str(tmp_path / "resumed")
    shutil.copytree(os.path.join(full, "checkpoint-8"), os.path.join(out, "checkpoint-8"))
    # a differently initialised model: everything must come from the checkpoint
    model = RewardEnsemble.from_backbone(
        bert_dropout, kind="heads", n_members=3, seed=123, train_trunk=True
    )

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    trainer = RewardModelTrainer(model, _resume_config(out), uninterrupted["train"])
    result = trainer.train(resume_from_checkpoint=os.path.join(out, "checkpoint-8"))
    assert result.global_step == 15
    ref = uninterrupted["state"]
    got = _state(model)
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)
    full_losses = [e["loss"] for e in uninterrupted["result"].log_history if "loss" in e]
    resumed_losses = [e["loss"] for e in result.log_history if "loss" in e]
    assert resumed_losses == pytest.approx(full_losses, abs=1e-6)
    assert sorted(os.listdir(out)) == ["checkpoint-12", "checkpoint-8"]


def test_resume_true_takes_latest_checkpoint(uninterrupted, bert_dropout, tmp_path):
    out = str(tmp_path / "latest")
    for name in ("checkpoint-4", "checkpoint-12"):
        shutil.copytree(os.path.join(uninterrupted["out"], name), os.path.join(out, name))
    model = RewardEnsemble.from_backbone(
        bert_dropout, kind="heads", n_members=3, seed=9, train_trunk=True
    )
    trainer = RewardModelTrainer(model, _resume_config(out), uninterrupted["train"])
    trainer.train(resume_from_checkpoint=True)
    for k, v in uninterrupted["state"].items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=1e-6, msg=k)


def test_checkpoints_hold_no_pickle(uninterrupted):
    ckpt = os.path.join(uninterrupted["out"], "checkpoint-4")
    files = [os.path.join(d, f) for d, _, fs in os.walk(ckpt) for f in fs]
    names = {os.path.relpath(f, ckpt) for f in files}
    for required in (
        "optimizer.safetensors",
        "optimizer.json",
        "scheduler.json",
        "rng_state_0.safetensors",
        "rng_state_0.json",
        "trainer_state.json",
        "model/config.json",
    ):
        assert required in names
    for f in files:
        assert not f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle")), f
        with open(f, "rb") as fh:
            head = fh.read(4)
        assert head[:2] != b"PK", f"{f} is a zip (torch.save) archive"
        assert not (head[:1] == b"\x80" and head[1:2] in bytes(range(2, 6))), f"{f} is a pickle"
    # optimizer state round-trips: AdamW moments for every trainable parameter
    opt = load_file(os.path.join(ckpt, "optimizer.safetensors"))
    meta = json.load(open(os.path.join(ckpt, "optimizer.json")))
    assert {v["exp_avg"]["tensor"] for v in meta["state"].values()} <= set(opt)
    assert all(float(opt[f"state.{pid}.step"]) == 4.0 for pid in meta["state"])


def test_incomplete_checkpoint_and_missing_checkpoint_errors(uninterrupted, bert, tmp_path):
    out = str(tmp_path / "broken")
    ckpt = os.path.join(out, "checkpoint-4")
    shutil.copytree(os.path.join(uninterrupted["out"], "checkpoint-4"), ckpt)
    os.remove(os.path.join(ckpt, "optimizer.json"))
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=3, seed=0, train_trunk=True)
    trainer = RewardModelTrainer(model, _resume_config(out), uninterrupted["train"])
    with pytest.raises(ValueError, match="optimizer.json"):
        trainer.train(resume_from_checkpoint=ckpt)
    empty = RewardModelTrainer(model, _resume_config(str(tmp_path / "none")), uninterrupted["train"])
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        empty.train(resume_from_checkpoint=True)


def test_save_total_limit_and_atomic_writes(bert, tmp_path):
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0, train_trunk=True)
    cfg = _resume_config(str(tmp_path), save_steps=2, save_total_limit=2, num_train_epochs=3)
    trainer = RewardModelTrainer(model, cfg, synthetic_dataset(24, seed=1))
    assert trainer.train().global_step == 9
    # checkpoints 2, 4, 6, 8 were written; the newest two are kept; no temporary folder is left
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-6", "checkpoint-8"]
    saved = trainer.save_model(str(tmp_path / "final"))
    reloaded = RewardEnsemble.from_pretrained(saved)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[k], v, rtol=0, atol=0)


def test_constructing_a_trainer_leaves_the_model_config_alone(bert, tmp_path):
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0, train_trunk=False)
    model.config.max_length = 48  # e.g. trained before with 48 tokens
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, max_length=24,
        disable_tqdm=True, fit_uncertainty=False,
    )
    trainer = RewardModelTrainer(model, cfg, synthetic_dataset(16, seed=1))
    assert trainer.collator.max_length == 24
    assert model.config.max_length == 48  # was 24 right after construction
    assert model.make_collator().max_length == 48
    # the trained model records the length it was trained with, and scoring uses it
    trainer.train()
    assert model.config.max_length == 24
    assert model.make_collator().max_length == 24
    reloaded = RewardEnsemble.from_pretrained(trainer.save_model(str(tmp_path / "final")))
    assert reloaded.config.max_length == 24
    # a length beyond the backbone's 64 positions is recorded as the capped length
    capped = RewardModelTrainer(model, dataclasses_replace(cfg, max_length=1000), synthetic_dataset(16, seed=1))
    assert model.config.max_length == 24
    capped.train()
    assert model.config.max_length == 64


# ------------------------------------------------------------------------------------ features


def test_frozen_trunk_trains_on_cached_features(bert, tmp_path, monkeypatch):
    train = synthetic_dataset(48, seed=1)
    cache = str(tmp_path / "cache")

    def run(encode_allowed: bool, use_features: bool = True, max_length: int = 32):
        model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=4, seed=0)
        assert model.trunk_frozen
        cfg = RewardTrainerConfig(
            output_dir=str(tmp_path / "out"),
            num_train_epochs=2,
            per_device_train_batch_size=8,
            learning_rate=1e-2,
            bootstrap=True,
            max_length=max_length,
            feature_cache_dir=cache if use_features else None,
            disable_tqdm=True,
        )
        trainer = RewardModelTrainer(model, cfg, train)
        trainer.use_features = use_features
        if not encode_allowed:
            monkeypatch.setattr(model, "encode", _forbidden)
        trainer.train()
        if not encode_allowed:
            monkeypatch.undo()
        return model, trainer

    m1, t1 = run(encode_allowed=True)
    files = os.listdir(cache)
    assert files == [t1.feature_cache_key(train)]
    folder = os.path.join(cache, files[0])
    shards = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    assert len(shards) == 1 and "index.json" in os.listdir(folder)
    cached = load_file(os.path.join(folder, shards[0]))
    assert cached["features"].shape == (2 * 48, 32)  # one row per text
    assert t1.feature_store.n_encoded == 2 * 48
    # second run reads the cache (encode is never called) and ends with identical heads
    m2, t2 = run(encode_allowed=False)
    assert t2.feature_store.n_encoded == 0
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(m2.state_dict()[k], v, rtol=0, atol=0)
    # the same training through the token path (trunk run every step) agrees
    m3, _ = run(encode_allowed=True, use_features=False)
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(m3.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    # the key names the trunk read at one length: not the data, the heads or their seeds
    assert t1.feature_cache_key(train) == t1.feature_cache_key(synthetic_dataset(48, seed=2))
    other = RewardEnsemble.from_backbone(bert, kind="heads", n_members=7, seed=3)
    assert t1.feature_store.key(other, t1.collator) == t1.feature_cache_key()
    assert t1.feature_store.key(other, other.make_collator(16)) != t1.feature_cache_key()


def test_feature_cache_serves_new_seeds_members_and_subsets_without_trunk_passes(bert, tmp_path, monkeypatch):
    """One trunk pass per text: a K=16 ensemble after a K=8 one, and a subset, read the store."""
    train = synthetic_dataset(40, seed=1)
    cache = str(tmp_path / "cache")

    def fit(n_members: int, seed: int, data) -> RewardModelTrainer:
        model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=n_members, seed=seed)
        cfg = RewardTrainerConfig(
            output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8,
            max_length=32, feature_cache_dir=cache, disable_tqdm=True,
        )
        trainer = RewardModelTrainer(model, cfg, data)
        trainer.train()
        return trainer

    first = fit(8, 0, train)
    assert first.feature_store.n_encoded == 80
    monkeypatch.setattr(RewardEnsemble, "encode", _forbidden)
    assert fit(16, 5, train).feature_store.n_encoded == 0
    assert fit(8, 1, train.select(range(10, 30))).feature_store.n_encoded == 0
    monkeypatch.undo()
    # new pairs: only they go through the trunk
    grown = fit(8, 0, synthetic_dataset(45, seed=1))
    assert grown.feature_store.n_encoded == 2 * 5
    # cached features equal live ones (same trunk, same length)
    model = grown.model
    fc, fr = grown.feature_store.features(model, train, collator=grown.collator)
    live_c, live_r = encode_dataset(model, train, progress=False, collator=grown.collator)
    np.testing.assert_allclose(fc, live_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fr, live_r, rtol=1e-5, atol=1e-6)


def _forbidden(*args, **kwargs):
    raise AssertionError("trunk features were recomputed instead of read from the cache")


# ------------------------------------------------------------------------------------ other models


def test_trains_any_model_meeting_the_contract(bert, tmp_path):
    """A minimal nn.Module with the auq model contract (n_members, forward, tokenizer, save/load)."""
    model = TinyEnsemble(TinyEnsembleConfig(bert, n_members=2, seed=0))
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        margin=0.5,
        save_steps=3,
        max_length=32,
        disable_tqdm=True,
    )
    before = _state(model)
    trainer = RewardModelTrainer(model, cfg, synthetic_pairs(32, seed=4))
    result = trainer.train()
    assert result.global_step == 6 and math.isfinite(result.training_loss)
    assert any(not torch.equal(before[k], v) for k, v in _state(model).items())
    assert os.path.isfile(os.path.join(str(tmp_path), "checkpoint-6", "model", "model.safetensors"))


def test_bad_arguments(bert, tmp_path):
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0)
    cfg = RewardTrainerConfig(output_dir=str(tmp_path), max_steps=1, disable_tqdm=True)
    with pytest.raises(TypeError, match="model"):
        RewardModelTrainer(object(), cfg, synthetic_pairs(4))
    with pytest.raises(TypeError, match="config"):
        RewardModelTrainer(model, {"output_dir": "x"}, synthetic_pairs(4))
    with pytest.raises(ValueError, match="train_dataset"):
        RewardModelTrainer(model, cfg, [])
    with pytest.raises(ValueError, match="margin.*strength"):
        RewardModelTrainer(
            model,
            RewardTrainerConfig(output_dir=str(tmp_path), margin="strength"),
            synthetic_dataset(4),
        )


# ------------------------------------------------------------------------------------ data parallel


@pytest.mark.slow
def test_two_process_run_matches_one_process(bert, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo), batch 4 each == 1 process with batch 8."""
    script = os.path.join(ROOT, "tests", "_accelerate_script.py")
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    run_one_and_two([script, bert, two, "4"], [script, bert, one, "8"])

    r1 = json.load(open(os.path.join(one, "data_order.json")))
    r2 = json.load(open(os.path.join(two, "data_order.json")))
    assert (r1["num_processes"], r2["num_processes"]) == (1, 2)
    assert r1["global_step"] == r2["global_step"] == 16
    assert r1["order"] == r2["order"]  # identical global batches at every step
    assert len(r1["order"][0]) == 8
    np.testing.assert_allclose(r2["losses"], r1["losses"], atol=1e-5)
    np.testing.assert_allclose(np.array(r2["margins"]), np.array(r1["margins"]), atol=1e-5)
    w1 = load_file(os.path.join(one, "final.safetensors"))
    w2 = load_file(os.path.join(two, "final.safetensors"))
    assert w1.keys() == w2.keys()
    # Parameters the Bradley-Terry loss is invariant to (softmax key biases; the last LayerNorm
    # bias and the head bias shift every reward equally) have an exactly-zero true gradient, so
    # Adam turns float round-off in them into steps of ~lr either way; they do not change any
    # margin (checked above). Every other weight must agree.
    invariant = {
        "heads.bias",
        "backbone.encoder.layer.1.output.LayerNorm.bias",
        "backbone.encoder.layer.0.attention.self.key.bias",
        "backbone.encoder.layer.1.attention.self.key.bias",
    }
    for k in w1:
        if k not in invariant:
            torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-5, msg=k)


def test_float32_trainer_after_a_bf16_accelerate_state_stays_float32(bert, tmp_path):
    """TRL's configs initialise Accelerate with bf16; Accelerate's state is process-wide. An auq
    trainer configured for float32 must still train and evaluate in float32 afterwards."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    train, test = synthetic_dataset(32, seed=1), synthetic_dataset(16, seed=2)

    def run():
        model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0)
        cfg = RewardTrainerConfig(
            output_dir=str(tmp_path / f"out{len(results)}"), max_steps=3, per_device_train_batch_size=8,
            learning_rate=1e-2, max_length=32, disable_tqdm=True, fit_uncertainty=False,
        )  # fmt: skip
        trainer = RewardModelTrainer(model, cfg, train, eval_dataset=test)
        trainer.use_features = False  # the token path: the trunk runs inside the prepared model
        trainer.train()
        return trainer, model

    results: list = []
    AcceleratorState._reset_state(True)
    results.append(run())
    AcceleratorState._reset_state(True)
    try:
        Accelerator(mixed_precision="bf16", cpu=True)  # what a TRL trainer leaves behind
        assert AcceleratorState().mixed_precision == "bf16"
        results.append(run())
        (t0, m0), (t1, m1) = results
        assert t1.accelerator.mixed_precision == "bf16" and not t1.accelerator.native_amp
        for k, v in m0.state_dict().items():
            torch.testing.assert_close(m1.state_dict()[k], v, rtol=1e-6, atol=1e-7)
        r0, r1 = t0.predict(test), t1.predict(test)
        for side in ("rewards_chosen", "rewards_rejected"):
            np.testing.assert_allclose(getattr(r1, side), getattr(r0, side), rtol=1e-6, atol=1e-7)
    finally:
        AcceleratorState._reset_state(True)

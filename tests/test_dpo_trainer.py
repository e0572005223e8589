"""End-to-end tests of UncertaintyDPOTrainer with a tiny GPT-2 built from a config (offline)."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from _tiny_models import load_tiny_lm

from auq.data import PreferenceDataset
from auq.training.dpo_trainer import (
    CausalLMPreferenceCollator,
    UncertaintyDPOConfig,
    UncertaintyDPOTrainer,
    attach_uncertainty,
    sequence_logps,
)
from auq.training.losses import dpo_loss, uncertainty_weights

PROMPTS = ["the cat", "a helpful", "please tell", "the weather", "what is the", "sure here", "I cannot", "a harmful"]
CHOSEN = [" sat on the mat", " answer is short", " me how", " is sunny", " capital of france", " is a recipe", " help with that", " answer is rude"]
REJECTED = [" is rude", " answer is long", " help", " is wind", " dog", " bread", " sorry", " answer is kind"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)


def _model(tiny_lm_dir, perturb: float = 0.0, seed: int = 1):
    return load_tiny_lm(tiny_lm_dir, perturb=perturb, seed=seed)


def _dataset(n=8, **cols):
    return PreferenceDataset(PROMPTS[:n], CHOSEN[:n], REJECTED[:n], **cols)


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), beta=0.5, per_device_train_batch_size=4, disable_tqdm=True, shuffle=False)
    base.update(kw)
    return UncertaintyDPOConfig(**base)


def _grads(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


def test_collator_masks_response_and_keeps_it_under_truncation(tokenizer):
    col = CausalLMPreferenceCollator(tokenizer, max_length=6)
    batch = col([_dataset()[0], _dataset()[4]])
    ids, resp, attn = batch["input_ids"], batch["response_mask"], batch["attention_mask"]
    assert ids.shape[0] == 4 and ids.shape[1] <= 6
    eos = tokenizer.eos_token_id
    for i in range(4):
        n = int(attn[i].sum())
        assert int(ids[i, n - 1]) == eos and int(resp[i, n - 1]) == 1  # eos closes the response
        assert torch.all(resp[i, n:] == 0)
    # chosen of pair 0 is " sat on the mat" + eos; its tokens are all response
    want = tokenizer(" sat on the mat", add_special_tokens=False)["input_ids"] + [eos]
    got = ids[0][resp[0].bool()].tolist()
    assert got[-len(want):] == want[-len(got):]
    assert col.n_truncated >= 1


def test_training_reduces_loss_and_logs(tiny_lm_dir, tokenizer, tmp_path):
    ds = _dataset(8, weights=[1, 2, 1, 0.5, 1, 1, 1, 1], targets=[1, 0.9, 1, 0.8, 1, 1, 1, 1])
    cfg = _cfg(tmp_path, learning_rate=5e-3, max_steps=12, logging_steps=4, shuffle=True)
    trainer = UncertaintyDPOTrainer(_model(tiny_lm_dir), cfg, ds, tokenizer)
    before = trainer.evaluate(ds)
    history = trainer.train()
    after = trainer.evaluate(ds)
    assert before["eval/loss"] == pytest.approx(np.log(2) * 1.0, rel=0.2)  # policy == reference at start
    assert after["eval/loss"] < 0.7 * before["eval/loss"]
    assert after["eval/rewards/accuracy"] > 0.8
    assert after["eval/rewards/margins"] > 0
    assert len(history) == 3 and history[-1]["step"] == 12
    for key in ("loss", "rewards/accuracy", "rewards/margins", "weights/mean", "targets/mean"):
        assert key in history[0]
    assert history[0]["weights/mean"] == pytest.approx(np.mean([1, 2, 1, 0.5, 1, 1, 1, 1]), abs=0.3)


def test_zero_weight_pair_does_not_change_the_gradient(tiny_lm_dir, tokenizer, tmp_path):
    policy = _model(tiny_lm_dir, perturb=0.05)
    ref = _model(tiny_lm_dir)
    w = [1.0, 1.0, 0.0, 1.0]
    full = UncertaintyDPOTrainer(copy.deepcopy(policy), _cfg(tmp_path), _dataset(4, weights=w), tokenizer, ref_model=copy.deepcopy(ref))
    keep = [0, 1, 3]
    sub = UncertaintyDPOTrainer(copy.deepcopy(policy), _cfg(tmp_path), _dataset(4).select(keep), tokenizer, ref_model=copy.deepcopy(ref))
    # a different (garbage) pair with weight 0 in place of pair 2
    other = PreferenceDataset(PROMPTS[:4], CHOSEN[:2] + [" dog dog dog"] + CHOSEN[3:4], REJECTED[:2] + [" mat"] + REJECTED[3:4], weights=w)
    swapped = UncertaintyDPOTrainer(copy.deepcopy(policy), _cfg(tmp_path), other, tokenizer, ref_model=copy.deepcopy(ref))

    def loss_grads(tr, n):
        loss, _ = tr.compute_loss(tr.collator([tr.train_dataset[i] for i in range(n)]))
        return loss, _grads(tr.model, loss)

    lf, gf = loss_grads(full, 4)
    ls, gs = loss_grads(sub, 3)
    lo, go = loss_grads(swapped, 4)
    assert float(lf) == pytest.approx(float(ls), rel=1e-5)
    assert float(lf) == pytest.approx(float(lo), rel=1e-5)
    for a, b, c in zip(gf, gs, go):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-7)


def test_unit_weights_and_targets_equal_plain_dpo(tiny_lm_dir, tokenizer, tmp_path):
    policy = _model(tiny_lm_dir, perturb=0.05)
    ref = _model(tiny_lm_dir)
    ones = _dataset(4, weights=np.ones(4), targets=np.ones(4))
    a = UncertaintyDPOTrainer(copy.deepcopy(policy), _cfg(tmp_path), ones, tokenizer, ref_model=copy.deepcopy(ref))
    b = UncertaintyDPOTrainer(
        copy.deepcopy(policy), _cfg(tmp_path, use_weights=False, use_targets=False), _dataset(4), tokenizer,
        ref_model=copy.deepcopy(ref),
    )
    batch = a.collator([ones[i] for i in range(4)])
    la, _ = a.compute_loss(batch)
    lb, _ = b.compute_loss(batch)
    ga, gb = _grads(a.model, la), _grads(b.model, lb)
    # and by hand: plain dpo_loss on the sequence log-probs
    with torch.no_grad():
        lp, _ = sequence_logps(policy, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        rp, _ = sequence_logps(ref, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    plain = dpo_loss(lp[:4], lp[4:], rp[:4], rp[4:], beta=0.5)
    assert float(la) == pytest.approx(float(lb), rel=1e-6)
    assert float(la) == pytest.approx(float(plain), rel=1e-5)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


def test_precomputed_reference_equals_frozen_copy(tiny_lm_dir, tokenizer, tmp_path):
    policy = _model(tiny_lm_dir, perturb=0.05)
    ds = _dataset(8)
    live = UncertaintyDPOTrainer(copy.deepcopy(policy), _cfg(tmp_path, loss_type="ipo"), ds, tokenizer, ref_model=_model(tiny_lm_dir))
    pre = UncertaintyDPOTrainer(
        copy.deepcopy(policy), _cfg(tmp_path, loss_type="ipo", precompute_ref_logps=True), ds, tokenizer, ref_model=_model(tiny_lm_dir)
    )
    assert pre.ref_model is None
    batch = live.collator([ds[i] for i in (5, 2, 7)])
    assert float(live.compute_loss(batch)[0]) == pytest.approx(float(pre.compute_loss(batch)[0]), rel=1e-5)


def _as_list_of_dicts(n):
    return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(PROMPTS[:n], CHOSEN[:n], REJECTED[:n])]


def _as_hf_dataset(n):
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_list(_as_list_of_dicts(n))


@pytest.mark.parametrize("make", [_as_list_of_dicts, _as_hf_dataset], ids=["list-of-dicts", "hf-dataset"])
def test_precomputed_reference_is_stored_per_pair_without_an_index_field(make, tiny_lm_dir, tokenizer, tmp_path):
    # Examples without an ``index`` field used to be collated with index -1, so every batch wrote
    # its reference log-probs into the last row and every pair then read that one row.
    ds = make(7)  # 7 pairs, batches of 3: the last batch is short
    assert "index" not in ds[0]
    ref = _model(tiny_lm_dir)
    trainer = UncertaintyDPOTrainer(
        _model(tiny_lm_dir, perturb=0.05), _cfg(tmp_path, per_device_train_batch_size=3, shuffle=True, precompute_ref_logps=True),
        ds, tokenizer, ref_model=copy.deepcopy(ref),
    )
    stored = trainer._ref_cache["logps"]
    with torch.no_grad():
        for i in range(7):
            one = trainer.collator([ds[i]])
            lp, _ = sequence_logps(ref, one["input_ids"], one["attention_mask"], one["response_mask"])
            torch.testing.assert_close(stored[i], lp.double(), rtol=1e-5, atol=1e-5)
    assert len(set(stored[:, 0].tolist())) == 7  # distinct pairs, distinct log-probs: not one row read seven times
    # the (shuffled) training batches read their own pairs' rows
    seen = []
    with torch.no_grad():
        for batch in trainer.train_loader:
            rc, rr = trainer._ref_logps(batch)
            lp, _ = sequence_logps(ref, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
            b = batch["index"].shape[0]
            torch.testing.assert_close(rc.double(), lp[:b].double(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(rr.double(), lp[b:].double(), rtol=1e-5, atol=1e-5)
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(7))
    assert trainer.evaluate(ds)["eval/loss"] == pytest.approx(
        UncertaintyDPOTrainer(
            copy.deepcopy(trainer.model), _cfg(tmp_path, per_device_train_batch_size=3), ds, tokenizer, ref_model=copy.deepcopy(ref)
        ).evaluate(ds)["eval/loss"],
        rel=1e-5,
    )


def test_robust_loss_with_per_pair_flip_rates_from_targets(tiny_lm_dir, tokenizer, tmp_path):
    policy = _model(tiny_lm_dir, perturb=0.05)
    ds = _dataset(4, targets=[1.0, 0.7, 0.95, 0.2])
    cfg = _cfg(tmp_path, loss_type="robust", robust_from_targets=True, use_targets=False)
    tr = UncertaintyDPOTrainer(copy.deepcopy(policy), cfg, ds, tokenizer, ref_model=_model(tiny_lm_dir))
    loss, _ = tr.compute_loss(tr.collator([ds[i] for i in range(4)]))
    assert torch.isfinite(loss)
    # all targets 1 -> flip rates 0 -> plain DPO
    ds1 = _dataset(4)
    tr1 = UncertaintyDPOTrainer(copy.deepcopy(policy), cfg, ds1, tokenizer, ref_model=_model(tiny_lm_dir))
    plain = UncertaintyDPOTrainer(copy.deepcopy(policy), _cfg(tmp_path), ds1, tokenizer, ref_model=_model(tiny_lm_dir))
    batch = tr1.collator([ds1[i] for i in range(4)])
    assert float(tr1.compute_loss(batch)[0]) == pytest.approx(float(plain.compute_loss(batch)[0]), rel=1e-6)
    assert float(loss) != pytest.approx(float(plain.compute_loss(batch)[0]), rel=1e-3)


def test_checkpoint_is_safetensors_and_json(tiny_lm_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    tr = UncertaintyDPOTrainer(_model(tiny_lm_dir), _cfg(tmp_path, max_steps=2, learning_rate=1e-2, save_steps=2), _dataset(8), tokenizer)
    tr.train()
    ck = tmp_path / "checkpoint-2"
    files = {os.path.relpath(os.path.join(d, f), ck) for d, _, fs in os.walk(ck) for f in fs}
    assert {"model/model.safetensors", "model/config.json", "model/tokenizer.json", "trainer_state.json",
            "optimizer.safetensors", "optimizer.json", "scheduler.json", "rng_state_0.safetensors"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["config"]["beta"] == 0.5
    assert (state["epoch"], state["batches_in_epoch"]) == (0, 2)  # 8 pairs / 4 per batch: end of epoch 0
    final = tr.save_model(str(tmp_path / "final"))  # the final policy + tokenizer, loadable by path
    assert os.path.exists(os.path.join(final, "tokenizer.json"))
    for path in (ck / "model", final):
        loaded = AutoModelForCausalLM.from_pretrained(str(path))
        for (n1, p1), (_, p2) in zip(tr.accelerator.unwrap_model(tr.model).named_parameters(), loaded.named_parameters()):
            assert torch.equal(p1.detach(), p2), n1


def _resume_cfg(out, **kw):
    # 8 pairs, 2 per micro-batch x 2 accumulated: 2 steps per epoch, 3 epochs = 6 steps; dropout on,
    # shuffled per epoch, warmup then linear decay, a log entry every 2 steps, checkpoints at 3 and 6
    base = dict(output_dir=str(out), beta=0.5, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                num_train_epochs=3, learning_rate=1e-2, lr_scheduler_type="linear", warmup_steps=2,
                weight_decay=0.01, disable_dropout=False, shuffle=True, seed=3, logging_steps=2,
                save_steps=3, disable_tqdm=True)
    base.update(kw)
    return UncertaintyDPOConfig(**base)


@pytest.mark.parametrize("precompute", [False, True])
def test_resume_mid_epoch_is_bit_exact(tiny_lm_dir, tokenizer, tmp_path, monkeypatch, precompute):
    import pickle
    import shutil

    ds = _dataset(8, weights=[1, 2, 1, 0.5, 1, 1, 1, 1], targets=[1, 0.9, 1, 0.8, 1, 1, 1, 1])
    ref = _model(tiny_lm_dir)
    full = UncertaintyDPOTrainer(_model(tiny_lm_dir), _resume_cfg(tmp_path / "full", precompute_ref_logps=precompute),
                                 ds, tokenizer, ref_model=copy.deepcopy(ref))
    full_log = full.train()
    assert full.global_step == 6 and sorted(os.listdir(tmp_path / "full")) == ["checkpoint-3", "checkpoint-6"]
    state = json.loads((tmp_path / "full" / "checkpoint-3" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_in_epoch"]) == (1, 2)  # the middle of epoch 1
    assert len(state["pending_metrics"]) == 2  # step 3's micro-batches, logged at step 4
    lrs = [e["learning_rate"] for e in full_log]
    assert lrs == pytest.approx([1e-2, 0.5e-2, 0.0], abs=1e-12)  # after steps 2, 4, 6: warmup 2, decay over 4

    out = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-3", out / "checkpoint-3")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    # a differently initialised policy: weights, optimizer, schedule, RNG and data position all
    # come from the checkpoint
    resumed = UncertaintyDPOTrainer(_model(tiny_lm_dir, perturb=0.3, seed=7),
                                    _resume_cfg(out, precompute_ref_logps=precompute), ds, tokenizer,
                                    ref_model=copy.deepcopy(ref))
    log = resumed.train(resume_from_checkpoint=True)
    assert resumed.global_step == 6
    a = full.accelerator.unwrap_model(full.model).state_dict()
    b = resumed.accelerator.unwrap_model(resumed.model).state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert log == full_log  # every logged loss, metric and learning rate, bit for bit
    assert sorted(os.listdir(out)) == ["checkpoint-3", "checkpoint-6"]


def test_resume_errors(tiny_lm_dir, tokenizer, tmp_path):
    tr = UncertaintyDPOTrainer(_model(tiny_lm_dir), _cfg(tmp_path, max_steps=1), _dataset(4), tokenizer)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        tr.train(resume_from_checkpoint=True)
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.raises(ValueError, match="incomplete.*trainer_state.json"):
        tr.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    with pytest.raises(TypeError, match="resume_from_checkpoint"):
        tr.train(resume_from_checkpoint=3)


def test_attach_uncertainty_votes_and_ensemble(tmp_path):
    from _tiny_models import make_tiny_backbone

    from auq.estimators import label_uncertainty
    from auq.models import RewardEnsemble

    votes = np.array([[3, 0], [2, 1], [1, 1], [4, 1]])
    ds = _dataset(4, votes=votes)
    out = attach_uncertainty(ds, "votes", method="linear")
    np.testing.assert_allclose(out.targets, votes[:, 0] / votes.sum(1))
    np.testing.assert_allclose(out.weights, uncertainty_weights(label_uncertainty(votes), "linear"))
    assert out.weights[2] == 0.0  # a 1:1 split carries no preference

    path = make_tiny_backbone(str(tmp_path / "bert"), "bert")
    ens = RewardEnsemble.from_backbone(path, kind="heads", n_members=3, seed=0)
    cache = str(tmp_path / "cache" / "rewards.npz")
    got = attach_uncertainty(
        _dataset(8), "ensemble", reward_model=ens, method="exp", cache_path=cache, use_targets=True
    )
    assert os.path.exists(cache)
    from auq.models import score

    dec = score(ens, _dataset(8), progress=False).decompose()
    np.testing.assert_allclose(got.targets, dec.prob, rtol=1e-6)
    np.testing.assert_allclose(got.weights, uncertainty_weights(dec.epistemic, "exp"), rtol=1e-5)
    assert got.weights.std() > 0  # members disagree
    # second call: served from the cache (the same weights in a model that cannot score prove it)
    mute = copy.deepcopy(ens)
    mute.forward = mute.encode = None
    again = attach_uncertainty(_dataset(8), "ensemble", reward_model=mute, method="exp", cache_path=cache)
    np.testing.assert_allclose(again.weights, got.weights)
    # another ensemble on the same dataset and cache: rescored, not served the first one's rewards
    other = RewardEnsemble.from_backbone(path, kind="heads", n_members=3, seed=1)
    got1 = attach_uncertainty(
        _dataset(8), "ensemble", reward_model=other, method="exp", cache_path=cache, use_targets=True
    )
    dec1 = score(other, _dataset(8), progress=False).decompose()
    np.testing.assert_allclose(got1.targets, dec1.prob, rtol=1e-6)
    assert not np.allclose(got1.targets, got.targets)
    # a cache name without ".npz" is written under that very name and served next time
    bare = str(tmp_path / "cache" / "bare_name")
    attach_uncertainty(_dataset(8), "ensemble", reward_model=ens, method="exp", cache_path=bare)
    assert os.path.exists(bare) and not os.path.exists(bare + ".npz")
    again = attach_uncertainty(_dataset(8), "ensemble", reward_model=mute, method="exp", cache_path=bare)
    np.testing.assert_allclose(again.weights, got.weights)
    with pytest.raises(ValueError, match="votes"):
        attach_uncertainty(_dataset(4), "votes")


def test_attach_uncertainty_old_scheme_name_warns_and_maps_to_method():
    ds = _dataset(4, votes=np.array([[3, 0], [2, 1], [1, 1], [4, 1]]))
    with pytest.warns(FutureWarning, match="scheme.*deprecated.*method"):
        old = attach_uncertainty(ds, "votes", scheme="linear")
    np.testing.assert_array_equal(old.weights, attach_uncertainty(ds, "votes", method="linear").weights)
    with pytest.raises(TypeError, match="scheme.*method"):
        attach_uncertainty(ds, "votes", scheme="linear", method="exp")


def test_attach_uncertainty_keeps_the_human_labels_by_default():
    """Hard labels (1.0) and vote shares stay the targets unless soft targets are asked for."""
    from auq.models import Predictions

    rng = np.random.default_rng(0)
    rc, rr = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
    preds = Predictions(rc, rr, np.ones(8), list(range(8)))
    prob = preds.decompose().prob
    assert np.abs(prob - 1.0).min() > 1e-3  # the ensemble's probabilities are not the labels
    soft = np.array([1.0, 0.75, 0.5, 1.0, 0.2, 1.0, 0.9, 0.6])
    for targets in (np.ones(8), soft):
        ds = _dataset(8, targets=targets)
        kept = attach_uncertainty(ds, "ensemble", predictions=preds, method="exp")
        np.testing.assert_array_equal(kept.targets, targets)
        np.testing.assert_allclose(kept.weights, uncertainty_weights(preds.decompose().epistemic, "exp"))
        replaced = attach_uncertainty(ds, "ensemble", predictions=preds, method="exp", use_targets=True)
        np.testing.assert_allclose(replaced.targets, prob)
        np.testing.assert_array_equal(ds.targets, targets)  # the input dataset is never modified


def test_config_and_input_errors(tiny_lm_dir, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        UncertaintyDPOConfig(loss_type="hinge")
    with pytest.raises(ValueError, match="beta"):
        UncertaintyDPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="weight_normalization"):
        UncertaintyDPOConfig(weight_normalization="batch")
    with pytest.raises(TypeError, match="config"):
        UncertaintyDPOTrainer(_model(tiny_lm_dir), {"beta": 0.1}, _dataset(4), tokenizer)

"""auq.integrations.trl: WeightedDPOTrainer (weights / soft targets in TRL's DPOTrainer) and the
uncertainty-penalised GRPO reward function, end to end with a tiny GPT-2 built offline."""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from _tiny_models import SENTENCES, build_tiny_lm  # noqa: E402

from auq.integrations.trl import (  # noqa: E402
    WeightedDPOConfig,
    WeightedDPOTrainer,
    WeightedPreferenceCollator,
    uncertainty_penalized_reward_func,
)
from auq.training.losses import dpo_loss, penalized_reward  # noqa: E402

# WeightedDPOTrainer / WeightedDPOConfig / WeightedPreferenceCollator are deprecated (one DPO
# implementation: auq.training.UncertaintyDPOTrainer); they keep working for one release, tested here
pytestmark = pytest.mark.filterwarnings(
    r"ignore:auq\.integrations\.trl\.Weighted.* is deprecated:FutureWarning"
)

PROMPTS = ["please tell me", "what is the capital", "the weather today", "a helpful answer"]
GOOD = ["sure here is a simple recipe for bread", "it is paris", "is sunny with light wind", "is short and kind"]
BAD = ["I cannot help with that request sorry", "the cat sat on the mat", "a harmful answer is rude", "is rude and long"]


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    return build_tiny_lm(str(tmp_path_factory.mktemp("tiny_lm")), seed=0)


@pytest.fixture(scope="module")
def tokenizer(lm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(lm_path)


def _load_model(lm_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(lm_path)


def _dataset(weight=None, target=None, n=8):
    rows = {
        "prompt": [PROMPTS[i % 4] for i in range(n)],
        "chosen": [" " + GOOD[i % 4] for i in range(n)],
        "rejected": [" " + BAD[(i + 1) % 4] for i in range(n)],
    }
    if weight is not None:
        rows["weight"] = [float(w) for w in weight]
    if target is not None:
        rows["target"] = [float(t) for t in target]
    return datasets.Dataset.from_dict(rows)


def _config(tmp_path, name, cls=None, **kw):
    cls = cls or WeightedDPOConfig
    base = dict(
        output_dir=str(tmp_path / name), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0, beta=0.5,
        dataloader_num_workers=0, max_length=64, disable_tqdm=True,
    )
    base.update(kw)
    return cls(**base)


def _trainer(lm_path, tokenizer, tmp_path, ds, name, stock=False, model=None, ref_model=None, **kw):
    model = model if model is not None else _load_model(lm_path)
    if stock:
        return trl.DPOTrainer(
            model=model, ref_model=ref_model, args=_config(tmp_path, name, cls=trl.DPOConfig, **kw),
            train_dataset=ds, processing_class=tokenizer,
        )
    return WeightedDPOTrainer(
        model=model, ref_model=ref_model, args=_config(tmp_path, name, **kw), train_dataset=ds,
        processing_class=tokenizer,
    )


def _batch(trainer, indices):
    examples = [trainer.train_dataset[i] for i in indices]
    return trainer.data_collator(examples)


# ------------------------------------------------------------------------------------------
# collator and columns
# ------------------------------------------------------------------------------------------


def test_weighted_dpo_classes_are_deprecated_in_favour_of_uncertainty_dpo_trainer(lm_path, tokenizer, tmp_path):
    import warnings

    with pytest.warns(FutureWarning, match=r"WeightedPreferenceCollator is deprecated.*UncertaintyDPOTrainer"):
        WeightedPreferenceCollator(pad_token_id=0)
    with pytest.warns(FutureWarning, match=r"WeightedDPOConfig is deprecated.*UncertaintyDPOConfig"):
        cfg = _config(tmp_path, "deprecated")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        WeightedDPOTrainer(model=_load_model(lm_path), args=cfg, train_dataset=_dataset(), processing_class=tokenizer)
    ours = [w for w in caught if issubclass(w.category, FutureWarning) and "auq.integrations" in str(w.message)]
    # one warning for the trainer, none for the collator it builds internally
    assert [str(w.message).split(" is deprecated")[0] for w in ours] == ["auq.integrations.trl.WeightedDPOTrainer"]
    assert "auq.training.UncertaintyDPOTrainer" in str(ours[0].message)


def test_collator_carries_weight_and_target_columns():
    c = WeightedPreferenceCollator(pad_token_id=0)
    ex = [
        {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5], "weight": 0.25, "target": 0.75},
        {"prompt_ids": [6], "chosen_ids": [7, 8], "rejected_ids": [9], "weight": 2.0, "target": 0.0},
    ]
    out = c(ex)
    assert out["weights"].dtype == torch.float32
    assert out["weights"].tolist() == [0.25, 2.0]
    assert out["targets"].tolist() == [0.75, 0.0]
    # TRL's own keys are unchanged
    assert out["input_ids"].tolist() == [[1, 2, 3, 0], [6, 7, 8, 0], [1, 2, 4, 5], [6, 9, 0, 0]]
    # absent columns and disabled columns -> 1
    ex2 = [{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}]
    assert c(ex2)["weights"].tolist() == [1.0] and c(ex2)["targets"].tolist() == [1.0]
    c_none = WeightedPreferenceCollator(pad_token_id=0, weight_column=None, target_column="q")
    out = c_none([{**ex[0], "q": 0.5}])
    assert out["weights"].tolist() == [1.0] and out["targets"].tolist() == [0.5]


def test_columns_survive_prepare_and_reach_the_batch(lm_path, tokenizer, tmp_path):
    w = [0.5, 1.0, 1.5, 2.0, 0.0, 3.0, 1.0, 1.0]
    q = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 1.0, 1.0]
    trainer = _trainer(lm_path, tokenizer, tmp_path, _dataset(w, q), "cols")
    assert {"weight", "target", "prompt_ids", "chosen_ids"} <= set(trainer.train_dataset.column_names)
    assert isinstance(trainer.data_collator, WeightedPreferenceCollator)
    # through the real dataloader (remove_unused_columns=True is the default)
    assert trainer.args.remove_unused_columns
    seen_w, seen_q = [], []
    for batch in trainer.get_train_dataloader():
        assert set(batch) >= {"input_ids", "completion_mask", "weights", "targets"}
        seen_w += batch["weights"].tolist()
        seen_q += batch["targets"].tolist()
    assert sorted(seen_w) == sorted(w)
    assert sorted(np.round(seen_q, 6)) == sorted(np.round(q, 6))


# ------------------------------------------------------------------------------------------
# the loss
# ------------------------------------------------------------------------------------------


def test_unit_weights_equal_stock_trl_loss_and_gradient(lm_path, tokenizer, tmp_path):
    ds = _dataset([1.0] * 8, [1.0] * 8)
    model = _load_model(lm_path)
    ours = _trainer(lm_path, tokenizer, tmp_path, ds, "ours", model=copy.deepcopy(model))
    stock = _trainer(lm_path, tokenizer, tmp_path, ds.remove_columns(["weight", "target"]), "stock",
                     stock=True, model=copy.deepcopy(model))
    idx = [0, 3, 5, 6]
    b_ours, b_stock = _batch(ours, idx), _batch(stock, idx)
    ours.model.train()
    stock.model.train()
    l_ours = ours.compute_loss(ours.model, b_ours)
    l_stock = stock.compute_loss(stock.model, b_stock)
    l_ours.backward()
    l_stock.backward()
    assert math.isfinite(l_stock.item())
    torch.testing.assert_close(l_ours, l_stock, rtol=1e-6, atol=1e-7)
    for (n1, p1), (_, p2) in zip(ours.model.named_parameters(), stock.model.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-5, atol=1e-7, msg=n1)
    # the policy starts as the reference: without dropout the loss is log 2 (up to float32 kernels:
    # the policy's forward runs with autograd on, the reference's under no_grad)
    ours.model.eval()
    with torch.no_grad():
        assert float(ours.compute_loss(ours.model, b_ours)) == pytest.approx(math.log(2.0), abs=1e-3)


def test_training_run_matches_stock_dpo_trainer_with_unit_weights(lm_path, tokenizer, tmp_path):
    ds = _dataset([1.0] * 8, [1.0] * 8)
    ours = _trainer(lm_path, tokenizer, tmp_path, ds, "run_ours", max_steps=3)
    stock = _trainer(lm_path, tokenizer, tmp_path, ds.remove_columns(["weight", "target"]), "run_stock",
                     stock=True, max_steps=3)
    ours.train()
    stock.train()
    lo = [h["loss"] for h in ours.state.log_history if "loss" in h]
    ls = [h["loss"] for h in stock.state.log_history if "loss" in h]
    assert len(lo) == len(ls) == 3
    np.testing.assert_allclose(lo, ls, rtol=1e-4)
    assert lo[-1] < lo[0]  # it trains
    for (n, p1), (_, p2) in zip(ours.model.named_parameters(), stock.model.named_parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-4, atol=1e-6, msg=n)
    logged = [h for h in ours.state.log_history if "weights/mean" in h]
    assert logged and all(h["weights/mean"] == 1.0 and h["targets/mean"] == 1.0 for h in logged)
    assert "rewards/accuracies" in logged[0]


def _trained_pair_losses(lm_path, tokenizer, tmp_path):
    """A policy moved away from the reference (so per-pair losses differ) and its per-pair losses."""
    ds = _dataset([1.0] * 8, [1.0] * 8)
    warm = _trainer(lm_path, tokenizer, tmp_path, ds, "warm", max_steps=2)
    warm.train()
    return warm.model, warm.ref_model


def test_weights_and_targets_reach_the_loss(lm_path, tokenizer, tmp_path):
    policy, ref = _trained_pair_losses(lm_path, tokenizer, tmp_path)
    w = [0.0, 0.0, 1.0, 0.0]
    q = [1.0, 0.3, 0.8, 1.0]
    tr = _trainer(lm_path, tokenizer, tmp_path, _dataset(w, q, n=4), "w", model=copy.deepcopy(policy),
                  ref_model=copy.deepcopy(ref))
    tr.model.eval()
    batch = _batch(tr, range(4))
    assert batch["weights"].tolist() == w
    with torch.no_grad():
        loss = float(tr.compute_loss(tr.model, batch))
        # per-pair log-probs of the same batch: the policy's as the loss computes them (TRL's forward
        # with the fused LM head), the reference's from TRL's helper
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        pc, pr = tr._sequence_logps(tr.model, kw, batch)[0].chunk(2)
        rc, rr = tr.compute_ref_log_probs(tr.ref_model, batch)
    per_pair = dpo_loss(pc, pr, rc, rr, beta=0.5, targets=torch.tensor(q), reduction="none")
    assert float(per_pair.std()) > 1e-4  # the pairs really differ
    # all weights zero but one -> that pair's (soft-target) loss
    assert loss == pytest.approx(float(per_pair[2]), rel=1e-5)
    z = 0.5 * ((pc - rc) - (pr - rr))[2]
    by_hand = -0.8 * torch.nn.functional.logsigmoid(z) - 0.2 * torch.nn.functional.logsigmoid(-z)
    assert loss == pytest.approx(float(by_hand), rel=1e-5)

    # the same pair alone through stock TRL (target 1) equals our loss with q = 1 for that pair
    stock = _trainer(lm_path, tokenizer, tmp_path, _dataset(n=4), "single", stock=True,
                     model=copy.deepcopy(policy), ref_model=copy.deepcopy(ref))
    stock.model.eval()
    with torch.no_grad():
        single = float(stock.compute_loss(stock.model, _batch(stock, [2])))
    q1 = _trainer(lm_path, tokenizer, tmp_path, _dataset(w, [1.0] * 4, n=4), "q1",
                  model=copy.deepcopy(policy), ref_model=copy.deepcopy(ref))
    q1.model.eval()
    with torch.no_grad():
        ours_q1 = float(q1.compute_loss(q1.model, _batch(q1, range(4))))
    # (a 1-pair batch is padded differently from a 4-pair one: float32 attention numerics differ ~1e-4)
    assert ours_q1 == pytest.approx(single, rel=2e-3)
    assert abs(ours_q1 - loss) > 0.01  # and the soft target 0.8 made a difference

    # normalise by n instead of sum(w): a quarter of it
    tn = _trainer(lm_path, tokenizer, tmp_path, _dataset(w, q, n=4), "wn", model=copy.deepcopy(policy),
                  ref_model=copy.deepcopy(ref), weight_normalize="n")
    tn.model.eval()
    with torch.no_grad():
        assert float(tn.compute_loss(tn.model, _batch(tn, range(4)))) == pytest.approx(loss / 4, rel=1e-5)


def test_weighted_training_logs_weight_and_target_means(lm_path, tokenizer, tmp_path):
    w = [2.0, 0.0, 2.0, 0.0, 2.0, 0.0, 2.0, 0.0]
    q = [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    tr = _trainer(lm_path, tokenizer, tmp_path, _dataset(w, q), "logs", per_device_train_batch_size=8, max_steps=2)
    tr.train()
    logged = [h for h in tr.state.log_history if "weights/mean" in h]
    assert len(logged) == 2
    assert logged[0]["weights/mean"] == pytest.approx(1.0)
    assert logged[0]["targets/mean"] == pytest.approx(0.75)
    assert all(math.isfinite(h["loss"]) for h in tr.state.log_history if "loss" in h)


def test_precomputed_reference_log_probs(lm_path, tokenizer, tmp_path):
    w = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    tr = _trainer(lm_path, tokenizer, tmp_path, _dataset(w, None), "pre", precompute_ref_log_probs=True,
                  max_steps=2)
    assert {"ref_chosen_logps", "weight"} <= set(tr.train_dataset.column_names)
    batch = _batch(tr, range(4))
    assert batch["weights"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert batch["targets"].tolist() == [1.0] * 4  # no target column -> 1
    tr.train()
    assert all(math.isfinite(h["loss"]) for h in tr.state.log_history if "loss" in h)


def test_bad_input(lm_path, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="weight_column"):
        _trainer(lm_path, tokenizer, tmp_path, _dataset([-1.0] + [1.0] * 7), "neg")
    with pytest.raises(ValueError, match="target_column"):
        _trainer(lm_path, tokenizer, tmp_path, _dataset(None, [1.5] + [1.0] * 7), "q")
    with pytest.raises(ValueError, match="weight"):
        _trainer(lm_path, tokenizer, tmp_path, _dataset([float("nan")] + [1.0] * 7), "nan")
    with pytest.raises(ValueError, match="weight_column='w'"):
        _trainer(lm_path, tokenizer, tmp_path, _dataset(), "missing", weight_column="w")
    with pytest.raises(ValueError, match="loss_type"):
        _trainer(lm_path, tokenizer, tmp_path, _dataset(), "ipo", loss_type=["ipo"])
    with pytest.raises(ValueError, match="weight_normalize"):
        _trainer(lm_path, tokenizer, tmp_path, _dataset(), "norm", weight_normalize="sum")
    with pytest.raises(TypeError, match="data_collator"):
        WeightedDPOTrainer(model=_load_model(lm_path), args=_config(tmp_path, "coll"), train_dataset=_dataset(),
                           processing_class=tokenizer, data_collator=lambda x: x)


# ------------------------------------------------------------------------------------------
# GRPO reward function
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    from _tiny_models import make_tiny_backbone

    from auq.models import RewardEnsemble

    path = make_tiny_backbone(tmp_path_factory.mktemp("rm"), "gpt2", seed=0)
    ens = RewardEnsemble.from_backbone(path, kind="heads", n_members=4, seed=0)
    return ens.eval()


def test_reward_function_returns_penalized_mean_minus_coef_std(ensemble):
    prompts = ["Human: How do I bake bread? Assistant:"] * 3 + ["Human: Tell me a joke. Assistant:"] * 3
    completions = [" Mix flour and water.", " No.", " Bake it.", " Why did the chicken cross?", " Paris.", " a b c"]
    fn = uncertainty_penalized_reward_func(ensemble, method="lcb", coef=0.7, batch_size=4)
    assert fn.__name__ == "auq_lcb"
    out = fn(prompts=prompts, completions=completions)
    assert isinstance(out, list) and len(out) == 6 and all(isinstance(x, float) for x in out)

    # member rewards straight from the model, one text at a time (no padding, no batching)
    r = np.stack([
        ensemble(torch.tensor([ensemble.tokenizer(p + c)["input_ids"]]), torch.ones(1, len(
            ensemble.tokenizer(p + c)["input_ids"]), dtype=torch.long))[0].detach().double().numpy()
        for p, c in zip(prompts, completions)
    ])
    np.testing.assert_allclose(fn.member_rewards(prompts, completions), r, rtol=1e-4, atol=1e-5)
    rc = r - r.mean(axis=0, keepdims=True)
    expected = rc.mean(axis=1) - 0.7 * rc.std(axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fn.last_std, rc.std(axis=1), rtol=1e-4, atol=1e-6)
    assert float(fn.last_std.min()) > 0  # independently initialised heads disagree
    np.testing.assert_allclose(out, penalized_reward(r, "lcb", coef=0.7), rtol=1e-6, atol=1e-6)

    # coef 0 -> the (centred) mean; a larger coef only lowers each reward
    mean_only = uncertainty_penalized_reward_func(ensemble, method="lcb", coef=0.0)(prompts, completions)
    np.testing.assert_allclose(mean_only, rc.mean(axis=1), rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(out) <= np.asarray(mean_only) + 1e-9)
    # fixed member offsets instead of per-call centring
    offs = r.mean(axis=0) + 1.0
    fo = uncertainty_penalized_reward_func(ensemble, method="wco", member_offsets=offs)
    np.testing.assert_allclose(fo(prompts, completions), (r - offs).min(axis=1), rtol=1e-4, atol=1e-5)


def test_reward_function_called_like_grpo_trainer(ensemble, caplog):
    fn = uncertainty_penalized_reward_func(ensemble, method="lcb", coef=1.0, name="penalised")
    metrics, extra = {}, {}
    prompts = ["Human: hi Assistant:"] * 4
    completions = [" hello", " go away", " the quick brown fox", " 0 1 2"]
    with caplog.at_level(logging.INFO, logger="auq.integrations.trl"):
        # exactly the keyword call of trl 1.16 GRPOTrainer._calculate_rewards (plus a dataset column)
        out = fn(
            prompts=prompts, completions=completions, completion_ids=[[1], [2], [3], [4]],
            answer=["x"] * 4, trainer_state=None,
            log_extra=lambda col, vals: extra.__setitem__(col, vals),
            log_metric=lambda name, v: metrics.__setitem__(name, v),
        )
    assert len(out) == 4
    assert metrics["penalised/member_std"] == pytest.approx(float(fn.last_std.mean()))
    assert extra["penalised_std"] == pytest.approx(fn.last_std.tolist())
    assert "member std" in caplog.text
    # conversational completions without a chat template: the 'role: content' lines, scored as
    # exactly those texts would be
    chat = fn(prompts=[[{"role": "user", "content": "hi"}]] * 2,
              completions=[[{"role": "assistant", "content": "hello"}]] * 2)
    plain = fn(prompts=["user: hi\nassistant:"] * 2, completions=[" hello\n"] * 2)
    assert chat == pytest.approx(plain, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 completions"):
        fn(prompts=["a"], completions=["b"])
    with pytest.raises(ValueError, match="coef"):
        uncertainty_penalized_reward_func(ensemble, coef=-1.0)
    with pytest.raises(ValueError, match="method"):
        uncertainty_penalized_reward_func(ensemble, method="max")


def test_grpo_trainer_runs_with_the_reward_function(ensemble, lm_path, tokenizer, tmp_path):
    fn = uncertainty_penalized_reward_func(ensemble, method="lcb", coef=0.5)
    ds = datasets.Dataset.from_dict({"prompt": [s.split(" ", 3)[-1] for s in SENTENCES[:4]]})
    cfg = trl.GRPOConfig(
        output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, max_steps=1, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, seed=0, learning_rate=1e-3, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = trl.GRPOTrainer(model=_load_model(lm_path), reward_funcs=[fn], args=cfg, train_dataset=ds,
                              processing_class=tokenizer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "auq_lcb/member_std" in h]
    assert logs, trainer.state.log_history
    assert logs[0]["auq_lcb/member_std"] > 0
    assert fn.last_std is not None and len(fn.last_std) == 4
    assert logs[0]["rewards/auq_lcb/mean"] == pytest.approx(float(np.mean(fn.last_rewards)), abs=1e-5)


def test_reward_function_caps_max_length_at_the_backbone(ensemble):
    # the tiny GPT-2 has 128 positions; a long completion is truncated, not an IndexError in torch
    assert ensemble.max_positions == 128
    fn = uncertainty_penalized_reward_func(ensemble, method="mean", max_length=512)
    r = fn.member_rewards(["Human: hi. Assistant:", "Human: yo. Assistant:"], [" word" * 400, " ok"])
    assert r.shape == (2, 4) and np.isfinite(r).all()

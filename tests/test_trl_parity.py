"""Agreement of auq's losses and DPO trainer with the installed TRL (skipped without TRL).

TRL 1.16 computes its DPO losses inside ``DPOTrainer._compute_loss`` (trl/trainer/dpo_trainer.py,
the ``for loss_type, loss_weight in zip(self.loss_types, ...)`` loop) from the model's fused
per-token log-probs. We build a real ``DPOTrainer`` (tiny GPT-2 from a config, offline tokenizer,
4-row dataset) and call ``_compute_loss`` with a stand-in model whose per-token log-probs are our
leaf tensors, so TRL's own code runs on exactly our inputs and autograd gives its gradients.

The TRL-free loss tests are in ``test_losses.py`` and run whether TRL is installed or not.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from _grad_helpers import assert_same, random_logps, value_and_grad
from _tiny_models import load_tiny_lm

from auq.data import PreferenceDataset
from auq.training.dpo_trainer import UncertaintyDPOConfig, UncertaintyDPOTrainer
from auq.training.losses import bradley_terry_loss, dpo_loss, ipo_loss, robust_dpo_loss

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------
# TRL harness
# ------------------------------------------------------------------------------------------


def _tiny_dataset():
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": ["the cat", "a helpful", "please tell", "the weather"],
            "chosen": [" sat on the mat", " answer is short", " me how", " is sunny"],
            "rejected": [" is rude", " answer is long", " help", " is wind"],
        }
    )


@pytest.fixture(scope="module")
def make_trl_dpo(tiny_lm_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    cache = {}

    def make(loss_type: str, beta: float = 0.1, label_smoothing: float = 0.0):
        key = (loss_type, beta, label_smoothing)
        if key not in cache:
            args = DPOConfig(
                output_dir=str(tmp_path_factory.mktemp("trl_dpo")),
                loss_type=[loss_type],
                beta=beta,
                label_smoothing=label_smoothing,
                precompute_ref_log_probs=True,
                per_device_train_batch_size=2,
                report_to=[],
                use_cpu=True,
                bf16=False,
            )
            cache[key] = DPOTrainer(
                model=AutoModelForCausalLM.from_pretrained(tiny_lm_dir),
                args=args,
                train_dataset=_tiny_dataset(),
                processing_class=AutoTokenizer.from_pretrained(tiny_lm_dir),
            )
        return cache[key]

    return make


class _StubLM(torch.nn.Module):
    """Stands in for the policy: returns the given per-token log-probs as TRL's fused output."""

    def __init__(self, per_token_logps):
        super().__init__()
        self.per_token_logps = per_token_logps

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        from trl.trainer.utils import FusedCausalLMOutput

        lp = self.per_token_logps
        zeros = torch.zeros_like(lp.detach())
        return FusedCausalLMOutput(
            log_probs=lp, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool(), log_sum_sq_probs=zeros
        )


def trl_loss(trainer, pc, pr, rc, rr, lengths_c=None, lengths_r=None):
    """Run TRL's ``_compute_loss`` on sequence log-probs ``[B]`` (and completion lengths)."""
    b = pc.shape[0]
    lc = [1] * b if lengths_c is None else list(lengths_c)
    lr = [1] * b if lengths_r is None else list(lengths_r)
    seq = max(lc + lr) + 1
    completion = torch.zeros(2 * b, seq, dtype=torch.long)
    for i, n in enumerate(lc + lr):
        completion[i, seq - n :] = 1
    logps = torch.cat([pc, pr])
    per_token = torch.cat([logps[:, None], torch.zeros(2 * b, seq - 2, dtype=logps.dtype)], dim=1)
    inputs = {
        "input_ids": torch.ones(2 * b, seq, dtype=torch.long),
        "attention_mask": torch.ones(2 * b, seq, dtype=torch.long),
        "completion_mask": completion,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    return trainer._compute_loss(_StubLM(per_token), inputs, return_outputs=False)


# ------------------------------------------------------------------------------------------
# agreement with TRL
# ------------------------------------------------------------------------------------------


def test_dpo_equals_trl_sigmoid_value_and_grad(make_trl_dpo):
    trainer = make_trl_dpo("sigmoid", beta=0.3)
    xs = random_logps()
    ref = value_and_grad(lambda *a: trl_loss(trainer, *a), xs)
    assert_same(value_and_grad(lambda *a: dpo_loss(*a, beta=0.3), xs), ref, rtol=0, atol=0)
    ones = torch.ones(6, dtype=torch.float64)
    unit = value_and_grad(lambda *a: dpo_loss(*a, beta=0.3, weights=ones, targets=ones), xs)
    assert_same(unit, ref)
    unit_n = value_and_grad(lambda *a: dpo_loss(*a, beta=0.3, weights=ones, weight_normalization="n"), xs)
    assert_same(unit_n, ref)
    # a nontrivial loss: the test would notice a sign or beta error
    assert float(ref[0]) != pytest.approx(math.log(2), abs=1e-3)


def test_constant_target_equals_trl_label_smoothed_cdpo(make_trl_dpo):
    # TRL 1.16's "sigmoid" no longer takes label_smoothing; its cDPO form
    # -(1-ε)logσ(βδ) - ε logσ(-βδ) lives in loss_type="aot", which sorts the policy and reference
    # log-ratios over the batch. With both already in ascending order the sort is the identity and
    # "aot" is exactly per-pair cDPO.
    eps, beta = 0.15, 0.2
    trainer = make_trl_dpo("aot", beta=beta, label_smoothing=eps)
    g = torch.Generator().manual_seed(1)
    b = 6
    ref_lr = torch.sort(torch.randn(b, generator=g, dtype=torch.float64) * 3).values
    pol_lr = torch.sort(torch.randn(b, generator=g, dtype=torch.float64) * 3).values
    rr = torch.randn(b, generator=g, dtype=torch.float64) - 30
    pr = torch.randn(b, generator=g, dtype=torch.float64) - 30
    xs = [(pr + pol_lr).requires_grad_(), pr.requires_grad_(), (rr + ref_lr).requires_grad_(), rr.requires_grad_()]
    with torch.no_grad():  # guard the premise
        assert torch.equal(torch.argsort(xs[0] - xs[1]), torch.arange(b))
        assert torch.equal(torch.argsort(xs[2] - xs[3]), torch.arange(b))
    ref = value_and_grad(lambda *a: trl_loss(trainer, *a), xs)
    ours = value_and_grad(lambda *a: dpo_loss(*a, beta=beta, targets=1 - eps), xs)
    assert_same(ours, ref)
    per_pair = value_and_grad(
        lambda *a: dpo_loss(*a, beta=beta, targets=torch.full((b,), 1 - eps, dtype=torch.float64)), xs
    )
    assert_same(per_pair, ref)


@pytest.mark.parametrize("eps", [0.0, 0.2, 0.45])
def test_robust_equals_trl_robust(make_trl_dpo, eps):
    trainer = make_trl_dpo("robust", beta=0.25, label_smoothing=eps)
    xs = random_logps(seed=2)
    ref = value_and_grad(lambda *a: trl_loss(trainer, *a), xs)
    assert_same(value_and_grad(lambda *a: robust_dpo_loss(*a, beta=0.25, epsilon=eps), xs), ref)
    eps_vec = torch.full((6,), eps, dtype=torch.float64)
    assert_same(value_and_grad(lambda *a: robust_dpo_loss(*a, beta=0.25, epsilon=eps_vec), xs), ref)


def test_ipo_equals_trl_ipo(make_trl_dpo):
    trainer = make_trl_dpo("ipo", beta=0.5)
    xs = random_logps(seed=3, scale=1.0)
    lc, lr = [1, 3, 2, 5, 4, 1], [2, 2, 1, 3, 6, 4]
    ref = value_and_grad(lambda *a: trl_loss(trainer, *a, lengths_c=lc, lengths_r=lr), xs)
    ours = value_and_grad(
        lambda *a: ipo_loss(
            *a, beta=0.5, chosen_lengths=torch.tensor(lc), rejected_lengths=torch.tensor(lr)
        ),
        xs,
    )
    assert_same(ours, ref)
    # sequence-level IPO (no lengths) is TRL's with every completion one token long
    ref1 = value_and_grad(lambda *a: trl_loss(trainer, *a), xs)
    assert_same(value_and_grad(lambda *a: ipo_loss(*a, beta=0.5), xs), ref1)
    ones = torch.ones(6, dtype=torch.float64)
    assert_same(value_and_grad(lambda *a: ipo_loss(*a, beta=0.5, targets=ones, weights=ones), xs), ref1)


def test_bradley_terry_margin_equals_trl_reward_trainer(tiny_lm_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    ds = _tiny_dataset().remove_columns("prompt")
    trainer = RewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(tiny_lm_dir, num_labels=1),
        args=RewardConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False),
        train_dataset=ds,
        processing_class=AutoTokenizer.from_pretrained(tiny_lm_dir),
    )
    g = torch.Generator().manual_seed(4)
    rc = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    rr = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    margin = torch.rand(5, generator=g, dtype=torch.float64) * 2

    class Stub(torch.nn.Module):
        def forward(self, **kwargs):
            from types import SimpleNamespace

            return SimpleNamespace(logits=torch.cat([rc, rr])[:, None])

    inputs = {"attention_mask": torch.ones(10, 3, dtype=torch.long), "margin": margin}
    ref = value_and_grad(lambda a, b: trainer.compute_loss(Stub(), dict(inputs)), [rc, rr])
    ours = value_and_grad(lambda a, b: bradley_terry_loss(a, b, margin=margin), [rc, rr])
    assert_same(ours, ref)
    # without a margin the loss is smaller for these positive margins
    assert float(bradley_terry_loss(rc, rr).detach()) < float(ref[0])


# ------------------------------------------------------------------------------------------
# UncertaintyDPOTrainer against TRL's DPOTrainer on a real (tiny) model
# ------------------------------------------------------------------------------------------


def test_dpo_trainer_sequence_logps_and_loss_match_trl(tiny_lm_dir, tmp_path):
    """Our causal-LM log-probs and DPO loss equal TRL's DPOTrainer on the same model and pairs."""
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    ref = load_tiny_lm(tiny_lm_dir)
    policy = load_tiny_lm(tiny_lm_dir, perturb=0.05)
    ours_policy, ours_ref = copy.deepcopy(policy), copy.deepcopy(ref)
    hf = _tiny_dataset()
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.5, report_to=[], use_cpu=True, bf16=False, per_device_train_batch_size=4)
    trl_trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=hf, processing_class=tokenizer)
    trl_batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(4)])
    trl_trainer.model.train()
    trl_loss = trl_trainer.compute_loss(trl_trainer.model, trl_batch)
    trl_g = torch.autograd.grad(trl_loss, [p for p in trl_trainer.model.parameters() if p.requires_grad])

    ours = PreferenceDataset(hf["prompt"], hf["chosen"], hf["rejected"])
    cfg = UncertaintyDPOConfig(output_dir=str(tmp_path / "ours"), beta=0.5, per_device_train_batch_size=4, disable_tqdm=True, shuffle=False)
    trainer = UncertaintyDPOTrainer(ours_policy, cfg, ours, tokenizer, ref_model=ours_ref)
    batch = trainer.collator([trainer.train_dataset[i] for i in range(4)])
    # same token sequences as TRL (prompt + completion + eos)
    trl_ids = [row[m.bool()].tolist() for row, m in zip(trl_batch["input_ids"], trl_batch["attention_mask"])]
    our_ids = [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"])]
    assert trl_ids == our_ids
    loss, metrics = trainer.compute_loss(batch)
    g = torch.autograd.grad(loss, [p for p in trainer.model.parameters() if p.requires_grad])
    assert float(loss) == pytest.approx(float(trl_loss), rel=1e-5)
    assert abs(float(loss) - np.log(2)) > 1e-3  # the policy really differs from the reference
    for a, b in zip(g, trl_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert metrics["rewards/accuracy"] == pytest.approx(trl_trainer._metrics["train"]["rewards/accuracies"][-1])
    assert metrics["rewards/margins"] == pytest.approx(trl_trainer._metrics["train"]["rewards/margins"][-1], rel=1e-4)

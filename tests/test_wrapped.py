"""Bring your own reward model: wrapping trained sequence classifiers (heads kept exactly),
ensembles of checkpoints, the member-reward module protocol of score(), export to a standard
AutoModelForSequenceClassification folder (transformers, pipeline, TRL GRPO) and the CLI."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from _tiny_models import bpe_tokenizer, make_tiny_backbone, wordpiece_tokenizer
from torch import nn

from auq.data import PreferenceCollator, PreferenceDataset
from auq.models import (
    MemberRewardModule,
    RewardEnsemble,
    SequenceClassifierRewardModel,
    export_sequence_classifier,
    infer_n_members,
    load_reward_model,
    score,
)

TEXTS = [
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then bake it.",
    "Human: hi Assistant: hello",
    "the quick brown fox jumps over the lazy dog while the cat sleeps",
    "Paris is the capital of France.",
]
PAIRS = {
    "prompt": ["Human: How do I bake bread?", "Human: Tell me a joke.", "Human: What is the capital of France?"],
    "chosen": [" Mix flour, water, salt and yeast.", " Why did the chicken cross the road?", " Paris."],
    "rejected": [" No.", " I can't help with that, but I can help you stay safe.", " the quick brown fox"],
}


def make_classifier(
    path, family: str, *, seed: int = 0, num_labels: int = 1, vocab_size: int = 400, initializer_range: float = 0.3,
) -> str:
    """A tiny random ``family`` ("gpt2"/"bert") sequence classifier + tokenizer saved to ``path``.

    ``initializer_range`` (BERT): 0.3 gives rewards of order 1 from the encoder; it also makes the
    random encoder so chaotic that its features no longer tell one input distribution from another
    (a smooth encoder needs ~0.1; see tests/test_wrapped_laplace.py)."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
    )

    path = os.fspath(path)
    if family == "gpt2":
        tok = bpe_tokenizer(vocab_size)
        tok.pad_token = tok.eos_token  # the usual GPT-2 reward-model setup
        cfg = GPT2Config(
            vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128, num_labels=num_labels,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        )
        cls = GPT2ForSequenceClassification
    else:
        tok = wordpiece_tokenizer()
        cfg = BertConfig(
            vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
            initializer_range=initializer_range,
        )
        cls = BertForSequenceClassification
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
        with torch.no_grad():  # a visible head: rewards of order 1, different per seed
            for p in model.parameters():
                if p.dim() == 2 and p.shape[0] == num_labels:
                    p.normal_(0.0, 1.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("classifiers")
    return {
        "gpt2": [make_classifier(d / f"gpt2_{s}", "gpt2", seed=s) for s in range(3)],
        "bert": [make_classifier(d / "bert_0", "bert", seed=0)],
    }


def _reference(path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path).eval()


def _batch(tokenizer, texts=TEXTS):
    b = tokenizer(list(texts), padding=True, return_tensors="pt")
    assert (b["attention_mask"] == 0).any()  # a padded batch
    return b["input_ids"], b["attention_mask"]


# -- wrapping -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_wrapped_reward_is_the_checkpoints_own_logit(ckpts, family):
    path = ckpts[family][0]
    rm = SequenceClassifierRewardModel.from_sequence_classifier(path).eval()
    ref = _reference(path)
    ids, mask = _batch(rm.tokenizer)
    with torch.no_grad():
        rewards = rm(ids, mask)
        want = ref(input_ids=ids, attention_mask=mask).logits
        feats = rm.encode(ids, mask)
        split = rm.forward_features(feats)
    assert rm.n_members == 1 and rm.trunk_frozen and rewards.shape == (len(TEXTS), 1)
    assert torch.equal(rewards, want)
    assert float(want.std()) > 0.1  # distinct rewards per text: a pooling mix-up would show
    torch.testing.assert_close(split, want, atol=1e-6, rtol=0)
    with torch.no_grad():  # the features are what enters the checkpoint's final linear layer
        if family == "bert":
            assert rm.heads[0] is ref.classifier or torch.equal(rm.heads[0].weight, ref.classifier.weight)
            expected = ref.bert(input_ids=ids, attention_mask=mask).pooler_output
        else:
            hidden = ref.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
            last = (mask.sum(1) - 1).long()  # right padding, no text ends in the pad (= eos) token
            expected = hidden[torch.arange(len(TEXTS)), last]
    torch.testing.assert_close(feats, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_score_on_a_preference_dataset_gives_the_own_logits(ckpts, family):
    path = ckpts[family][0]
    rm = SequenceClassifierRewardModel.from_sequence_classifier(path)
    ds = PreferenceDataset.from_dict(PAIRS)
    preds = score(rm, ds, batch_size=2, device="cpu", progress=False)
    batch = PreferenceCollator(rm.tokenizer, max_length=128)([ds[i] for i in range(len(ds))])
    ref = _reference(path)
    with torch.no_grad():
        c = ref(input_ids=batch["input_ids_chosen"], attention_mask=batch["attention_mask_chosen"]).logits
        r = ref(input_ids=batch["input_ids_rejected"], attention_mask=batch["attention_mask_rejected"]).logits
    np.testing.assert_allclose(preds.rewards_chosen, c.double().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(preds.rewards_rejected, r.double().numpy(), atol=1e-5, rtol=0)


def test_ensemble_of_three_checkpoints_column_k_is_checkpoint_k(ckpts):
    paths = ckpts["gpt2"]
    ens = SequenceClassifierRewardModel.from_sequence_classifier(paths).eval()
    ids, mask = _batch(ens.tokenizer)
    with torch.no_grad():
        rewards = ens(ids, mask)
        feats = ens.encode(ids, mask)
        cols = [_reference(p)(input_ids=ids, attention_mask=mask).logits[:, 0] for p in paths]
    assert ens.n_members == 3 and rewards.shape == (len(TEXTS), 3) and feats.shape == (len(TEXTS), 3, 32)
    for k in range(3):
        assert torch.equal(rewards[:, k], cols[k])
    assert not torch.allclose(rewards[:, 0], rewards[:, 1], atol=1e-3)  # the seeds differ
    torch.testing.assert_close(ens.forward_features(feats), rewards, atol=1e-6, rtol=0)
    assert ens.sources == paths
    assert infer_n_members(ens) == 3


def test_decoder_rewards_do_not_depend_on_the_batch(ckpts):
    from transformers import AutoTokenizer

    left = AutoTokenizer.from_pretrained(ckpts["gpt2"][0], padding_side="left")
    rm = SequenceClassifierRewardModel.from_sequence_classifier(ckpts["gpt2"][0], left).eval()
    assert rm.tokenizer.padding_side == "right" and left.padding_side == "left"  # a copy, yours untouched
    with torch.no_grad():
        together = rm(*_batch(rm.tokenizer))[:, 0]
        alone = torch.cat([rm(*_ids(rm.tokenizer, t))[:, 0] for t in TEXTS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_training_mode_trains_the_heads_only(ckpts):
    rm = SequenceClassifierRewardModel.from_sequence_classifier(ckpts["bert"][0])
    ids, mask = _batch(rm.tokenizer)
    with torch.no_grad():
        want = rm.eval()(ids, mask)
    rm.train()
    out = rm(ids, mask)
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)  # the frozen trunk stays in eval mode
    out.sum().backward()
    assert rm.heads[0].weight.grad is not None
    assert all(p.grad is None for n, p in rm.members[0].named_parameters() if not n.startswith("classifier"))
    # d(sum of rewards)/d(head weight) is the sum of the features
    torch.testing.assert_close(rm.heads[0].weight.grad[0], rm.encode(ids, mask).sum(0), atol=1e-5, rtol=0)


def test_save_load_round_trip(ckpts, tmp_path):
    ens = SequenceClassifierRewardModel.from_sequence_classifier(ckpts["gpt2"]).eval()
    ids, mask = _batch(ens.tokenizer)
    ens.save_pretrained(tmp_path / "auq")
    again = load_reward_model(tmp_path / "auq")
    assert type(again) is SequenceClassifierRewardModel and again.n_members == 3
    assert again.config.auq_model_type == "sequence_classifier" and again.sources == ckpts["gpt2"]
    with torch.no_grad():
        assert torch.equal(again(ids, mask), ens(ids, mask))
    (tmp_path / "auq" / "members" / "1" / "config.json").write_text("{}")  # tampered
    with pytest.raises(ValueError, match="checksum"):
        load_reward_model(tmp_path / "auq")


# -- export -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_heads(tmp_path_factory):
    path = make_tiny_backbone(tmp_path_factory.mktemp("gpt2_backbone"), "gpt2", hidden_dropout=0.0)
    ens = RewardEnsemble.from_backbone(path, kind="heads", n_members=3, seed=3).eval()
    with torch.no_grad():
        ens.heads.weight.mul_(4.0)  # rewards of order 1
    return ens


def _pipeline_scores(folder, texts):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=folder, function_to_apply="none", device="cpu")
    return np.array([out["score"] for out in pipe(list(texts))])


def test_export_heads_member_and_mean_load_in_transformers_and_pipeline(gpt2_heads, tmp_path):
    ens = gpt2_heads
    ids, mask = _batch(ens.tokenizer)
    with torch.no_grad():
        rewards = ens(ids, mask).double()
        single = torch.cat([ens(*_batch(ens.tokenizer, [t, t + " x"]))[:1] for t in TEXTS]).double()
    export_sequence_classifier(ens, tmp_path / "m2", member=2)
    export_sequence_classifier(ens, tmp_path / "mean", mean=True)
    for name, want in (("m2", rewards[:, 2]), ("mean", rewards.mean(1))):
        exported = _reference(tmp_path / name)
        assert type(exported).__name__ == "GPT2ForSequenceClassification" and exported.config.num_labels == 1
        with torch.no_grad():
            got = exported(input_ids=ids, attention_mask=mask).logits[:, 0].double()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert float(rewards.std(0).min()) > 0.05 and float((rewards[:, 2] - rewards.mean(1)).abs().max()) > 0.05
    # the pipeline scores one text at a time (no padding)
    np.testing.assert_allclose(_pipeline_scores(str(tmp_path / "m2"), TEXTS), single[:, 2].numpy(), atol=1e-5)
    np.testing.assert_allclose(_pipeline_scores(str(tmp_path / "mean"), TEXTS), single.mean(1).numpy(), atol=1e-5)
    info = json.loads((tmp_path / "mean" / "auq_export.json").read_text())
    assert info["mean"] is True and info["max_abs_difference_on_probe"] < 1e-5


def test_export_refuses_a_bias_the_decoder_head_cannot_hold(gpt2_heads, tmp_path):
    ens = gpt2_heads
    with torch.no_grad():
        ens.heads.bias.fill_(0.5)
    try:
        with pytest.raises(ValueError, match="drop_bias"):
            export_sequence_classifier(ens, tmp_path / "b", member=0)
        export_sequence_classifier(ens, tmp_path / "b", member=0, drop_bias=True)
        ids, mask = _batch(ens.tokenizer)
        with torch.no_grad():
            got = _reference(tmp_path / "b")(input_ids=ids, attention_mask=mask).logits[:, 0]
            want = ens(ids, mask)[:, 0] - 0.5
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    finally:
        with torch.no_grad():
            ens.heads.bias.zero_()


def test_export_mc_dropout_head_samples(gpt2_heads, tmp_path):
    from auq.models import MCDropoutRewardModel

    mc = MCDropoutRewardModel.from_backbone(gpt2_heads.config.backbone, n_samples=4, scope="head", p=0.3, seed=1).eval()
    with torch.no_grad():
        mc.heads.weight.mul_(4.0)
    ids, mask = _batch(mc.tokenizer)
    with torch.no_grad():
        rewards = mc(ids, mask).double()
    assert float((rewards[:, 2] - rewards[:, 3]).abs().max()) > 0.01  # the samples differ
    export_sequence_classifier(mc, tmp_path / "s2", member=2)
    export_sequence_classifier(mc, tmp_path / "mean", mean=True)
    for name, want in (("s2", rewards[:, 2]), ("mean", rewards.mean(1))):
        with torch.no_grad():
            got = _reference(tmp_path / name)(input_ids=ids, attention_mask=mask).logits[:, 0].double()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_export_independent_member_uses_its_own_trunk(gpt2_heads, tmp_path):
    ind = RewardEnsemble.from_backbone(gpt2_heads.config.backbone, kind="independent", n_members=2).eval()
    with torch.no_grad():
        for p in ind.backbones[1].parameters():
            p.add_(0.05 * torch.randn_like(p))  # member 1 fine-tuned: its trunk differs
        ind.heads.weight.mul_(4.0)
    export_sequence_classifier(ind, tmp_path / "m1", member=1)
    ids, mask = _batch(ind.tokenizer)
    with torch.no_grad():
        rewards = ind(ids, mask)
        got = _reference(tmp_path / "m1")(input_ids=ids, attention_mask=mask).logits[:, 0]
    torch.testing.assert_close(got, rewards[:, 1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="own trunk"):
        export_sequence_classifier(ind, tmp_path / "x", mean=True)


def test_export_lora_member_merges_its_adapter(gpt2_heads, tmp_path):
    lora = RewardEnsemble.from_backbone(gpt2_heads.config.backbone, kind="lora", n_members=2, seed=1).eval()
    with torch.no_grad():
        for name, p in lora.backbone.named_parameters():
            if "lora_B" in name:  # trained adapters: B is no longer zero
                p.normal_(0.0, 0.5)
        lora.heads.weight.mul_(4.0)
    ids, mask = _batch(lora.tokenizer)
    with torch.no_grad():
        rewards = lora(ids, mask)
    assert float((rewards[:, 0] - rewards[:, 1]).abs().max()) > 0.05
    export_sequence_classifier(lora, tmp_path / "m1", member=1)
    with torch.no_grad():
        got = _reference(tmp_path / "m1")(input_ids=ids, attention_mask=mask).logits[:, 0]
        again = lora(ids, mask)
    torch.testing.assert_close(got, rewards[:, 1], atol=1e-5, rtol=0)
    assert torch.equal(again, rewards)  # the ensemble's own adapters are untouched by the merge


def test_export_wrapped_member_is_the_checkpoint(ckpts, tmp_path):
    ens = SequenceClassifierRewardModel.from_sequence_classifier(ckpts["gpt2"]).eval()
    export_sequence_classifier(ens, tmp_path / "m1", member=1)
    ids, mask = _batch(ens.tokenizer)
    with torch.no_grad():
        got = _reference(tmp_path / "m1")(input_ids=ids, attention_mask=mask).logits[:, 0]
        assert torch.equal(got, ens(ids, mask)[:, 1])
    with torch.no_grad():
        single = torch.cat([ens(*_batch(ens.tokenizer, [t, t + " x"]))[:1, 1] for t in TEXTS])
    np.testing.assert_allclose(_pipeline_scores(str(tmp_path / "m1"), TEXTS), single.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="own trunk"):
        export_sequence_classifier(ens, tmp_path / "x", mean=True)


def test_export_errors(tmp_path, gpt2_heads):
    bert = make_tiny_backbone(tmp_path / "bert", "bert")
    mean_pooled = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2)
    with pytest.raises(ValueError, match="mean pooling.*cannot be exported exactly"):
        export_sequence_classifier(mean_pooled, tmp_path / "x", mean=True)
    cls_pooled = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, pooling="cls")
    with pytest.raises(ValueError, match="pooler"):
        export_sequence_classifier(cls_pooled, tmp_path / "x", member=0)
    with pytest.raises(ValueError, match="lcb.*not linear"):
        export_sequence_classifier(gpt2_heads, tmp_path / "x", lcb=1.0)
    with pytest.raises(ValueError, match="member=K"):
        export_sequence_classifier(gpt2_heads, tmp_path / "x")
    with pytest.raises(ValueError, match="member must be in"):
        export_sequence_classifier(gpt2_heads, tmp_path / "x", member=3)
    assert not (tmp_path / "x").exists()


def test_grpo_trainer_runs_with_the_exported_folder_as_reward(gpt2_heads, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from _tiny_models import SENTENCES, build_tiny_lm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(tmp_path / "reward")
    export_sequence_classifier(gpt2_heads, folder, mean=True)
    lm = build_tiny_lm(str(tmp_path / "lm"), seed=0)
    seen: dict = {}

    def capture(prompts, completions, **kw):  # weight 0: records what the reward model scored
        seen["texts"] = [p + c for p, c in zip(prompts, completions)]
        return [0.0] * len(prompts)

    cfg = trl.GRPOConfig(
        output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, max_steps=1, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, seed=0, learning_rate=1e-3, disable_tqdm=True, dataloader_num_workers=0,
        reward_weights=[1.0, 0.0], bf16=False,  # float32 rewards, to compare exactly
    )
    ds = datasets.Dataset.from_dict({"prompt": [s.split(" ", 3)[-1] for s in SENTENCES[:4]]})
    torch.manual_seed(0)
    trainer = trl.GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(lm), reward_funcs=[folder, capture], args=cfg,
        train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(lm),
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/reward/mean" in h]
    assert logged, trainer.state.log_history
    tok = gpt2_heads.tokenizer
    with torch.no_grad():
        want = [float(gpt2_heads(*_ids(tok, t)).mean()) for t in seen["texts"]]
    assert logged[0]["rewards/reward/mean"] == pytest.approx(float(np.mean(want)), abs=1e-4)


def test_trl_reward_trainer_loads_the_exported_folder_with_its_head(gpt2_heads, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    folder = str(tmp_path / "m0")
    export_sequence_classifier(gpt2_heads, folder, member=0)
    ds = datasets.Dataset.from_dict({"chosen": PAIRS["chosen"][:2] * 2, "rejected": PAIRS["rejected"][:2] * 2})
    cfg = trl.RewardConfig(
        output_dir=str(tmp_path / "rt"), per_device_train_batch_size=2, max_steps=1, report_to="none",
        save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = trl.RewardTrainer(model=folder, args=cfg, train_dataset=ds)
    ids, mask = _batch(gpt2_heads.tokenizer)
    with torch.no_grad():  # the trained head, not a fresh random one
        got = trainer.model.eval()(input_ids=ids, attention_mask=mask).logits[:, 0]
        torch.testing.assert_close(got, gpt2_heads(ids, mask)[:, 0], atol=1e-5, rtol=0)
    trainer.train()
    assert np.isfinite(trainer.state.log_history[-1]["train_loss"])


def _ids(tok, text):
    b = tok([text], return_tensors="pt", add_special_tokens=False)
    return b["input_ids"], b["attention_mask"]


# -- the protocol of score() --------------------------------------------------------------------
class _TwoHeads(nn.Module):
    """A user's own module: two linear heads on a checkpoint's pooled features -> [B, 2]."""

    def __init__(self, path):
        super().__init__()
        self.inner = SequenceClassifierRewardModel.from_sequence_classifier(path)
        self.tokenizer = self.inner.tokenizer
        self.scale = nn.Parameter(torch.tensor([1.0, -2.0]))

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids, attention_mask) * self.scale


def test_score_accepts_any_module_meeting_the_protocol(ckpts):
    mine = _TwoHeads(ckpts["bert"][0])
    assert isinstance(mine, MemberRewardModule) and not hasattr(mine, "n_members")
    assert infer_n_members(mine) == 2
    ds = PreferenceDataset.from_dict(PAIRS)
    preds = score(mine, ds, device="cpu", progress=False)
    base = score(mine.inner, ds, device="cpu", progress=False)
    assert preds.n_members == 2
    np.testing.assert_allclose(preds.rewards_chosen, base.rewards_chosen * np.array([1.0, -2.0]), atol=1e-6)


def test_score_says_what_a_module_lacks(ckpts):
    ds = PreferenceDataset.from_dict(PAIRS)

    class NoForward(nn.Module):
        tokenizer = None

    with pytest.raises(TypeError, match="no forward"):
        score(NoForward(), ds, progress=False)
    with pytest.raises(ValueError, match="no tokenizer.*collator="):
        score(nn.Linear(2, 2), ds, progress=False)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        score(lambda ids, mask: ids, ds, progress=False)


# -- input errors and the silent trap -------------------------------------------------------------
def test_wrapping_errors(tmp_path, ckpts):
    two = make_classifier(tmp_path / "two", "gpt2", num_labels=2)
    with pytest.raises(ValueError, match="path_or_model .* num_labels=2"):
        SequenceClassifierRewardModel.from_sequence_classifier(two)
    other_vocab = make_classifier(tmp_path / "other", "gpt2", vocab_size=300)
    with pytest.raises(ValueError, match=r"path_or_model\[1\] .* different tokenizer"):
        SequenceClassifierRewardModel.from_sequence_classifier([ckpts["gpt2"][0], other_vocab])
    backbone = make_tiny_backbone(tmp_path / "plain", "gpt2")
    with pytest.raises(ValueError, match="not a sequence classifier"):
        SequenceClassifierRewardModel.from_sequence_classifier(backbone)
    with pytest.raises(TypeError, match="path_or_model"):
        SequenceClassifierRewardModel.from_sequence_classifier(3)


def test_from_backbone_on_a_classifier_warns_that_the_head_is_dropped(ckpts, caplog):
    with caplog.at_level(logging.WARNING, logger="auq.models._backbone"):
        ens = RewardEnsemble.from_backbone(ckpts["gpt2"][0], kind="heads", n_members=2)
    assert ens.config.pooling == "last"  # a GPT-2 classifier checkpoint is still a decoder
    assert "GPT2ForSequenceClassification" in caplog.text and "DROPS its trained" in caplog.text
    assert "SequenceClassifierRewardModel.from_sequence_classifier" in caplog.text


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_wrap_score_export(ckpts, tmp_path):
    from auq.cli import main

    data = tmp_path / "pairs.jsonl"
    with open(data, "w") as fh:
        for i in range(3):
            fh.write(json.dumps({k: PAIRS[k][i] for k in PAIRS}) + "\n")
    out = tmp_path / "wrapped"
    args = ["wrap", "--output", str(out), "--no-progress"]
    for p in ckpts["gpt2"]:
        args += ["--model", p]
    assert main(args) == 0
    assert main(["score", "--model", str(out), "--data", str(data), "--output", str(tmp_path / "s.csv"),
                 "--device", "cpu", "--no-progress"]) == 0
    import pandas as pd

    scored = pd.read_csv(tmp_path / "s.csv")
    ens = load_reward_model(out)
    direct = score(ens, PreferenceDataset.from_dict(PAIRS), device="cpu", progress=False)
    np.testing.assert_allclose(scored[[f"reward_chosen_{k}" for k in range(3)]].to_numpy(), direct.rewards_chosen, atol=1e-6)
    assert main(["export", "--model", str(out), "--output", str(tmp_path / "e1"), "--member", "1", "--no-progress"]) == 0
    ids, mask = _batch(ens.tokenizer)
    with torch.no_grad():
        assert torch.equal(_reference(tmp_path / "e1")(input_ids=ids, attention_mask=mask).logits[:, 0], ens(ids, mask)[:, 1])
    assert main(["export", "--model", str(out), "--output", str(tmp_path / "e2"), "--no-progress"]) == 2
    assert main(["export", "--model", str(out), "--output", str(tmp_path / "e2"), "--member", "7", "--no-progress"]) == 2
    assert main(["wrap", "--model", str(tmp_path / "missing" / "x"), "--output", str(tmp_path / "w")]) == 2


# -- uncertainty for the reward model you already have ------------------------------------------
def test_feature_density_over_a_wrapped_model_flags_shifted_inputs(ckpts):
    """A trained classifier, wrapped as it is: its density (fitted on preference pairs, no
    retraining) separates shifted synthetic pairs from in-distribution ones, its rewards unchanged
    up to the training offset."""
    from auq.calibration import ood_auroc
    from auq.data import make_synthetic_preferences

    model = SequenceClassifierRewardModel.from_sequence_classifier(ckpts["gpt2"][0])
    test = make_synthetic_preferences(100, seed=1).dataset
    raw = score(model, test, progress=False)
    model.fit_uncertainty(make_synthetic_preferences(300, seed=0).dataset, progress=False)
    assert model.density is not None and model.anchored
    inside = score(model, test, progress=False)
    shifted = score(model, make_synthetic_preferences(100, seed=2, shift=3.0).dataset, progress=False)
    assert ood_auroc(inside.ood, shifted.ood) >= 0.9
    # anchoring subtracts one constant per member: margins are the checkpoint's own
    np.testing.assert_allclose(inside.margins, raw.margins, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        inside.rewards_chosen - raw.rewards_chosen, -model.reward_offsets[None, :].repeat(100, 0), atol=1e-5
    )

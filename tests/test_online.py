"""Tests of auq.training.online: RLOO / PPO loop, best-of-n, reward adapter, checkpoints.

A tiny GPT-2 (hidden 32, 2 layers) built from a config and a word-level tokenizer over the
synthetic vocabulary, both saved to a temporary folder and loaded by path.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from auq.data.synthetic import SyntheticPreferenceGenerator
from auq.training._generation import _response_mask
from auq.training.best_of_n import best_of_n, best_of_n_kl, ensemble_reward_fn
from auq.training.losses import penalized_reward
from auq.training.online import OnlineConfig, OnlineTrainer, rloo_advantages

pytestmark = pytest.mark.usefixtures("one_thread")


GEN = SyntheticPreferenceGenerator(dim=4, n_levels=4)
WORDS = list(GEN.vocabulary.ravel())
TARGET = WORDS[5]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("online")
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    fast.save_pretrained(root / "tok")
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=2,
        eos_token_id=3, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    GPT2LMHeadModel(cfg).save_pretrained(root / "policy")
    return str(root / "tok"), str(root / "policy")


def load(paths):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(paths[1]), AutoTokenizer.from_pretrained(paths[0])


def count_reward(prompts, completions):
    """Two members: the count of TARGET, and the count plus a fixed per-length disagreement."""
    c = np.array([x.split().count(TARGET) for x in completions], dtype=float)
    length = np.array([len(x.split()) for x in completions], dtype=float)
    return np.stack([c, c + 0.3 * length], axis=1)


def fast_config(**kw):
    base = dict(per_device_train_batch_size=4, k=4, max_new_tokens=6, learning_rate=3e-3, disable_tqdm=True, kl_coef=0.0)
    base.update(kw)
    return OnlineConfig(**base)


def target_rate(trainer):
    ro = trainer.rollout(["<bos>"], k=128, seed=12345)
    words = [w for c in ro.completions for w in c.split()]
    return sum(w == TARGET for w in words) / max(len(words), 1)


# ------------------------------------------------------------------ pieces


def test_rloo_advantages_values_and_zero_sum():
    r = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])
    np.testing.assert_allclose(rloo_advantages(r, 3), [-1.5, 0.0, 1.5, -3.0, -3.0, 6.0])
    x = torch.randn(40, dtype=torch.float64)
    a = rloo_advantages(x, 8)
    assert torch.is_tensor(a)
    torch.testing.assert_close(a.reshape(5, 8).sum(1), torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="k=3"):
        rloo_advantages(np.zeros(4), 3)
    with pytest.raises(ValueError, match="k"):
        rloo_advantages(np.zeros(4), 1)


def test_best_of_n_kl_formula():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(256) == pytest.approx(math.log(256) - 255 / 256)
    with pytest.raises(ValueError, match="n"):
        best_of_n_kl(0)


def test_response_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 3, 0, 0], [5, 6, 7, 8], [3, 3, 5, 3]])
    m = _response_mask(ids, eos_token_id=3)
    assert m.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert _response_mask(ids, None).sum() == 12


def test_config_validation_names_argument():
    with pytest.raises(ValueError, match="algorithm"):
        OnlineConfig(algorithm="a2c")
    with pytest.raises(ValueError, match="penalty_method"):
        OnlineConfig(penalty_method="max")
    with pytest.raises(ValueError, match="k"):
        OnlineConfig(k=1)
    with pytest.raises(ValueError, match="kl_coef"):
        OnlineConfig(kl_coef=-0.1)
    with pytest.raises(ValueError, match="penalty_coef"):
        OnlineConfig(penalty_coef=-1.0)
    with pytest.raises(ValueError, match="kl_estimator"):
        OnlineConfig(kl_estimator="k9")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        OnlineConfig(gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="bf16"):
        OnlineConfig(bf16=True)
    assert OnlineConfig(algorithm="ppo", k=1).k == 1


# ------------------------------------------------------------------ the loop


def test_rloo_learns_to_say_the_rewarded_word(paths):
    policy, tok = load(paths)
    trainer = OnlineTrainer(policy, None, tok, count_reward, ["<bos>"], fast_config())
    before = target_rate(trainer)
    hist = trainer.train(steps=30)
    after = target_rate(trainer)
    df = hist.to_pandas()
    assert list(df.columns[:5]) == ["step", "reward_mean", "reward_std", "penalized_reward", "kl"]
    assert len(df) == 30
    # a 1-in-16 word at initialisation becomes a large share of the output
    assert before < 0.15
    assert after > before + 0.2, (before, after)
    assert df.reward_mean.iloc[-10:].mean() > df.reward_mean.iloc[:5].mean() + 0.5
    # the policy moved away from the reference; the KL estimate sees it
    assert df.kl.iloc[-5:].mean() > 0.3


def test_step_advantages_sum_to_zero_per_prompt_and_kl_zero_at_start(paths):
    policy, tok = load(paths)
    ref, _ = load(paths)  # a separately loaded copy: identical weights
    trainer = OnlineTrainer(policy, ref, tok, count_reward, ["<bos>", "<bos> <bos>"],
                            fast_config(kl_coef=0.1, kl_estimator="k3"))
    ro = trainer.rollout(["<bos>", "<bos> <bos>"], k=4)
    assert torch.equal(ro.kl, torch.zeros(8))
    torch.testing.assert_close(ro.logprobs, ro.ref_logprobs)
    out = trainer.step()
    assert out["kl"] == 0.0
    adv = out["advantages"].reshape(-1, 4)
    torch.testing.assert_close(adv.sum(1), torch.zeros(adv.shape[0]), atol=1e-5, rtol=0)
    # the RLOO baseline of sample i is the mean of the other k - 1 (KL is 0 at this step)
    pen = out["penalized"].reshape(-1, 4).float()
    expected = pen - (pen.sum(1, keepdim=True) - pen) / 3
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    # prompts are grouped k in a row
    assert out["rollout"].prompts[:4] == ["<bos>"] * 4 or out["rollout"].prompts[:4] == ["<bos> <bos>"] * 4
    # after an update the policy differs from the reference
    assert trainer.rollout(["<bos>"], k=8).kl.abs().sum() > 0


def test_step_on_a_given_rollout_equals_the_sampled_step(paths):
    """``step(rollout=...)`` learns from the given samples exactly as from its own; bad rollouts are refused."""
    prompts = ["<bos>", f"<bos> {WORDS[0]}"]
    trainers = []
    for _ in range(2):
        policy, tok = load(paths)
        trainers.append(OnlineTrainer(policy, load(paths)[0], tok, count_reward, prompts,
                                      fast_config(per_device_train_batch_size=2, kl_coef=0.05)))
    a, b = trainers
    out_a = a.step()
    ro = b.rollout(b._batch_prompts(0))  # what step() would sample at step 0
    out_b = b.step(rollout=ro)
    assert out_b["rollout"] is ro and out_a["rollout"].completions == ro.completions
    assert a.records == b.records
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(TypeError, match="rollout must be a Rollout"):
        b.step(rollout={"completions": []})
    short = b.rollout(["<bos>"], k=3)  # 3 rows: not groups of k=4
    with pytest.raises(ValueError, match="groups of k=4"):
        b.step(rollout=short)


def test_lcb_with_zero_coef_equals_mean(paths):
    results = {}
    for method in ("mean", "lcb", "uwo"):
        policy, tok = load(paths)
        tr = OnlineTrainer(policy, None, tok, count_reward, ["<bos>"],
                           fast_config(penalty_method=method, penalty_coef=0.0))
        outs = [tr.step() for _ in range(2)]
        results[method] = (outs, [p.detach().clone() for p in policy.parameters()])
    for method in ("lcb", "uwo"):
        for a, b in zip(results["mean"][0], results[method][0]):
            torch.testing.assert_close(a["penalized"], b["penalized"])
        for pa, pb in zip(results["mean"][1], results[method][1]):
            torch.testing.assert_close(pa, pb)
    # a positive coefficient does change the objective (the members disagree by 0.3*length)
    policy, tok = load(paths)
    tr = OnlineTrainer(policy, None, tok, count_reward, ["<bos>"], fast_config(penalty_method="lcb", penalty_coef=1.0))
    out = tr.step()
    assert not torch.allclose(out["penalized"], results["mean"][0][0]["penalized"])


def test_kl_as_loss_term_and_in_reward(paths):
    policy, tok = load(paths)
    tr = OnlineTrainer(policy, None, tok, count_reward, ["<bos>"],
                       fast_config(kl_in_reward=False, kl_coef=0.5, kl_estimator="k3"))
    hist = tr.train(steps=3).to_pandas()
    assert (hist.kl >= 0).all() and np.isfinite(hist.loss).all()
    # a huge KL coefficient in the reward keeps the policy near the reference
    p1, tok = load(paths)
    free = OnlineTrainer(p1, None, tok, count_reward, ["<bos>"], fast_config(kl_coef=0.0))
    p2, _ = load(paths)
    tied = OnlineTrainer(p2, None, tok, count_reward, ["<bos>"], fast_config(kl_coef=5.0))
    free.train(steps=15)
    tied.train(steps=15)
    kl_free = float(free.rollout(["<bos>"], k=64, seed=7).kl.mean())
    kl_tied = float(tied.rollout(["<bos>"], k=64, seed=7).kl.mean())
    assert kl_tied < kl_free


def test_ppo_improves_reward(paths):
    policy, tok = load(paths)
    trainer = OnlineTrainer(policy, None, tok, count_reward, ["<bos>"],
                            fast_config(algorithm="ppo", num_ppo_epochs=2, minibatch_size=8))
    before = target_rate(trainer)
    trainer.train(steps=25)
    after = target_rate(trainer)
    assert after > before + 0.1, (before, after)


def test_checkpoint_round_trip_continues_exactly(paths, tmp_path):
    for algorithm in ("rloo", "ppo"):
        policy, tok = load(paths)
        cfg = fast_config(algorithm=algorithm, penalty_method="lcb", penalty_coef=0.5)
        a = OnlineTrainer(policy, None, tok, count_reward, ["<bos>"], cfg)
        a.train(steps=2)
        path = a.save_checkpoint(tmp_path / algorithm / "ckpt")
        a.save_checkpoint(path)  # overwriting an existing checkpoint is atomic too
        files = {os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs}
        assert {"model/model.safetensors", "model/config.json", "trainer_state.json", "optimizer.safetensors",
                "optimizer.json", "scheduler.json", "rng_state_0.safetensors"} <= files
        assert ("value_head.safetensors" in files) == (algorithm == "ppo")
        assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
        assert not [f for f in os.listdir(tmp_path / algorithm) if ".tmp" in f or ".old" in f]
        # a fresh trainer, with a differently initialised policy, picks up where `a` stopped
        from transformers import GPT2LMHeadModel

        torch.manual_seed(99)
        other = GPT2LMHeadModel(policy.config)
        b = OnlineTrainer(other, None, tok, count_reward, ["<bos>"], cfg)
        b.ref_policy.load_state_dict(a.ref_policy.state_dict())
        b.load_checkpoint(path)
        assert b.step_count == 2 and b.records == a.records
        torch.testing.assert_close(b.member_offsets, a.member_offsets)
        for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
            torch.testing.assert_close(pa, pb)
        oa, ob = a.step(), b.step()
        assert oa["rollout"].completions == ob["rollout"].completions
        assert oa["loss"] == pytest.approx(ob["loss"], rel=1e-5)
        for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
            torch.testing.assert_close(pa, pb)
    with pytest.raises(ValueError, match="incomplete"):
        b.load_checkpoint(tmp_path)


@pytest.mark.parametrize("algorithm", ["rloo", "ppo"])
def test_resume_from_checkpoint_is_bit_exact(paths, tmp_path, algorithm):
    import shutil

    from transformers import GPT2LMHeadModel

    def cfg(out):
        # 6 steps over 3 prompts, 2 per step (the order is reshuffled per pass); warmup then cosine
        # decay; PPO with 2 passes of minibatch 4 per batch (several optimizer steps per rollout step)
        return fast_config(algorithm=algorithm, output_dir=str(out), max_steps=6, per_device_train_batch_size=2,
                           warmup_steps=2, lr_scheduler_type="cosine", save_steps=2, save_total_limit=2,
                           penalty_method="lcb", penalty_coef=0.5, kl_coef=0.05, num_ppo_epochs=2,
                           minibatch_size=4, seed=4)

    prompts = ["<bos>", f"<bos> {WORDS[0]}", f"<bos> {WORDS[1]}"]
    policy, tok = load(paths)
    ref = load(paths)[0]
    full = OnlineTrainer(policy, ref, tok, count_reward, prompts, cfg(tmp_path / "full"))
    history = full.train()
    assert full.step_count == 6
    assert sorted(os.listdir(tmp_path / "full")) == ["checkpoint-4", "checkpoint-6"]  # save_total_limit=2
    lrs = [r["learning_rate"] for r in history.records]
    assert lrs[:3] == pytest.approx([0.0, 1.5e-3, 3e-3]) and lrs[3] == pytest.approx(3e-3 * 0.5 * (1 + math.cos(math.pi / 4)))

    out = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-4", out / "checkpoint-4")
    torch.manual_seed(99)
    other = GPT2LMHeadModel(policy.config)  # differently initialised: everything comes from the checkpoint
    resumed = OnlineTrainer(other, load(paths)[0], tok, count_reward, prompts, cfg(out))
    resumed_history = resumed.train(resume_from_checkpoint=True)
    assert resumed.step_count == 6
    assert resumed_history.records == history.records  # every logged reward, KL, loss and lr, bit for bit
    for (name, a), b in zip(full.policy.named_parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b), name
    if algorithm == "ppo":
        for a, b in zip(full.value_head.parameters(), resumed.value_head.parameters()):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="'rloo' checkpoint|'ppo' checkpoint"):
        other_algo = "ppo" if algorithm == "rloo" else "rloo"
        OnlineTrainer(load(paths)[0], None, tok, count_reward, prompts,
                      fast_config(algorithm=other_algo)).load_checkpoint(out / "checkpoint-4")


def test_sampling_is_seeded_and_leaves_global_rng_alone(paths):
    policy, tok = load(paths)
    tr = OnlineTrainer(policy, None, tok, count_reward, ["<bos>"], fast_config())
    torch.manual_seed(3)
    state = torch.get_rng_state()
    r1 = tr.rollout(["<bos>"], k=8, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    r2 = tr.rollout(["<bos>"], k=8, seed=1)
    r3 = tr.rollout(["<bos>"], k=8, seed=2)
    assert r1.completions == r2.completions and r1.completions != r3.completions


def test_bad_inputs(paths):
    policy, tok = load(paths)
    with pytest.raises(TypeError, match="reward_fn"):
        OnlineTrainer(policy, None, tok, "not callable", ["<bos>"], fast_config())
    with pytest.raises(TypeError, match="prompts"):
        OnlineTrainer(policy, None, tok, count_reward, "<bos>", fast_config())
    with pytest.raises(ValueError, match="prompts"):
        OnlineTrainer(policy, None, tok, count_reward, [], fast_config())
    with pytest.raises(TypeError, match="policy"):
        OnlineTrainer(torch.nn.Linear(2, 2), None, tok, count_reward, ["<bos>"], fast_config())
    tr = OnlineTrainer(policy, None, tok, lambda p, c: np.zeros((len(c) + 1, 2)), ["<bos>"], fast_config())
    with pytest.raises(ValueError, match="one row per completion"):
        tr.step()
    tr = OnlineTrainer(policy, None, tok, lambda p, c: np.full((len(c), 2), np.nan), ["<bos>"], fast_config())
    with pytest.raises(ValueError, match="NaN"):
        tr.step()
    tr = OnlineTrainer(policy, None, tok, count_reward, [""], fast_config())
    with pytest.raises(ValueError, match="no tokens"):
        tr.step()


# ------------------------------------------------------------------ best of n


def test_best_of_n_picks_argmax_of_penalised_objective(paths):
    policy, tok = load(paths)

    def disagreeing(prompts, completions):
        # member 0 likes TARGET, member 1 likes length: mean and LCB rank differently
        c = np.array([x.split().count(TARGET) for x in completions], dtype=float)
        length = np.array([len(x.split()) for x in completions], dtype=float)
        return np.stack([2.0 * c, length], axis=1)

    prompts = ["<bos>"] * 6
    chosen = {}
    for method, coef in (("mean", 0.0), ("lcb", 1.0), ("wco", 0.0), ("uwo", 0.5)):
        res = best_of_n(policy, tok, prompts, disagreeing, n=16, method=method, coef=coef,
                        max_new_tokens=6, seed=3)
        members = res.candidate_member_rewards.reshape(-1, 2)
        centred = members - members.mean(0)  # default centring: over all candidates
        mean, std = centred.mean(1), centred.std(1)
        objective = {"mean": mean, "lcb": mean - coef * std, "wco": centred.min(1),
                     "uwo": mean - coef * std**2}[method].reshape(6, 16)
        np.testing.assert_allclose(res.candidate_objective, objective, atol=1e-12)
        np.testing.assert_array_equal(res.index, objective.argmax(1))
        np.testing.assert_allclose(res.proxy_rewards, objective.max(1), atol=1e-12)
        assert res.completions == [res.candidates[i][j] for i, j in enumerate(res.index)]
        np.testing.assert_allclose(res.member_rewards, disagreeing(prompts, res.completions))
        assert res.kl == pytest.approx(math.log(16) - 15 / 16)
        assert len(res.to_pandas()) == 6
        chosen[method] = res.index
    # same seed: the same pool of candidates, different objectives pick differently somewhere
    assert any(not np.array_equal(chosen["mean"], chosen[m]) for m in ("lcb", "wco", "uwo"))
    # with n = 1 there is no choice and no KL
    one = best_of_n(policy, tok, prompts, disagreeing, n=1, max_new_tokens=6)
    assert one.kl == 0.0 and (one.index == 0).all()
    # given offsets replace the centring
    res = best_of_n(policy, tok, prompts, disagreeing, n=4, method="mean", member_offsets=[0.0, 0.0],
                    max_new_tokens=6)
    np.testing.assert_allclose(res.proxy_rewards, res.member_rewards.mean(1))
    with pytest.raises(ValueError, match="method"):
        best_of_n(policy, tok, prompts, disagreeing, n=4, method="best")
    with pytest.raises(ValueError, match="coef"):
        best_of_n(policy, tok, prompts, disagreeing, n=4, method="lcb", coef=-1.0)


def test_ensemble_reward_fn_matches_model(tmp_path):
    from _tiny_models import make_tiny_backbone

    from auq.data import PreferenceCollator
    from auq.models import RewardEnsemble

    path = make_tiny_backbone(tmp_path / "bert", "bert", hidden_dropout=0.0)
    ens = RewardEnsemble.from_backbone(path, kind="heads", n_members=3, seed=0)
    ens.train()
    fn = ensemble_reward_fn(ens, batch_size=2)
    prompts = ["Human: hi. Assistant:", "Human: bake bread? Assistant:", ""]
    comps = [" hello there", " mix flour and water", " the quick brown fox"]
    out = fn(prompts, comps)
    assert out.shape == (3, 3) and out.dtype == np.float64
    assert ens.training  # training flag restored
    batch = PreferenceCollator(ens.tokenizer)(
        [{"prompt": p, "chosen": c, "rejected": c} for p, c in zip(prompts, comps)]
    )
    ens.eval()
    with torch.no_grad():
        ref = ens(batch["input_ids_chosen"], batch["attention_mask_chosen"]).double().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert out.std(1).min() > 0  # members differ
    # the order of a batch does not matter (padding is masked)
    np.testing.assert_allclose(fn(prompts[::-1], comps[::-1])[::-1], out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="same length"):
        fn(prompts, comps[:2])
    # and it plugs into penalized_reward
    assert penalized_reward(out, "lcb", coef=1.0).shape == (3,)


def test_trained_logprobs_are_the_samplers_with_left_padded_prompts(paths):
    """The log-probs the loss uses equal generate's own (left padding, position ids, EOS mask)."""
    from auq.training._generation import _token_logprobs, _tokenize_prompts

    policy, tok = load(paths)
    prompts = ["<bos>", "<bos> " + " ".join(WORDS[:3])]
    ids, mask = _tokenize_prompts(tok, prompts, torch.device("cpu"))
    assert mask[0].tolist() == [0, 0, 0, 1]  # left padded
    torch.manual_seed(0)
    out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=6, top_k=0,
                          top_p=1.0, pad_token_id=0, eos_token_id=3, output_logits=True,
                          return_dict_in_generate=True)
    resp = out.sequences[:, ids.shape[1]:]
    rmask = _response_mask(resp, 3)
    with torch.no_grad():
        lp, _ = _token_logprobs(policy, out.sequences, torch.cat([mask, rmask.long()], 1), ids.shape[1], 1.0)
    gen_lp = torch.stack([torch.log_softmax(x, -1) for x in out.logits], 1)
    gen_lp = gen_lp.gather(-1, resp.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(lp * rmask, gen_lp * rmask, atol=1e-5, rtol=0)


def test_ensemble_reward_fn_caps_max_length_at_the_backbone(tmp_path):
    from _tiny_models import make_tiny_backbone

    from auq.models import RewardEnsemble

    ens = RewardEnsemble.from_backbone(make_tiny_backbone(tmp_path / "gpt2", "gpt2"), kind="heads", n_members=2)
    assert ens.max_positions == 128
    out = ensemble_reward_fn(ens, max_length=512)(["Human: hi. Assistant:"], [" word" * 400])
    assert out.shape == (1, 2) and np.isfinite(out).all()

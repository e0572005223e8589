"""auq.monitor: thresholds from the training responses (against hand computation), the per-step
signals, the alarm, and the stop signal reaching TRL's GRPOTrainer and auq's OnlineTrainer."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import auq.monitor as monitor_pkg
from auq.models import fit_density
from auq.monitor import (
    RateAlarm,
    RewardHackingCallback,
    RewardHackingMonitor,
    RewardHackingWarning,
    online_monitor_callback,
    response_features,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _binom_sf(x: int, n: int, p: float) -> float:
    """P(X >= x), X ~ Binomial(n, p), summed by hand."""
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(x, n + 1))


def test_public_names():
    assert set(monitor_pkg.__all__) == {
        "RewardHackingMonitor", "RateAlarm", "MonitorStep", "RewardHackingWarning",
        "RewardHackingCallback", "online_monitor_callback", "response_features",
    }


# ------------------------------------------------------------------ thresholds by hand


def test_rate_alarm_equals_hand_binomial_and_factor_rule():
    a = RateAlarm("x", cutoff=0.5, nominal=0.01, factor=3.0, alpha=0.01)
    # n = 32: 3 x 1% x 32 = 0.96 -> the ratio asks for >= 1; P(X>=1) = 0.275, P(X>=2) = 0.040, P(X>=3) = 0.0036
    assert a.p_value(2, 32) == pytest.approx(_binom_sf(2, 32, 0.01), rel=1e-10)
    assert a.p_value(3, 32) == pytest.approx(_binom_sf(3, 32, 0.01), rel=1e-10)
    assert _binom_sf(2, 32, 0.01) > 0.01 >= _binom_sf(3, 32, 0.01)
    assert a.critical_count(32) == 3
    assert [a.test(x, 32)[0] for x in range(5)] == [False, False, False, True, True]
    # n = 1000: the binomial alone would fire at 19 (P = 0.0047); the ratio asks for 30
    assert _binom_sf(19, 1000, 0.01) <= 0.01
    assert a.critical_count(1000) == 30
    assert not a.test(29, 1000)[0] and a.test(30, 1000)[0]
    # the ratio rule is exact at its boundary (3 x 0.07 x 100 = 21.000000000000004 in floats)
    b = RateAlarm("x", 0.5, 0.07, 3.0, 0.5)
    assert b.critical_count(100) == 21 and b.test(21, 100)[0] and not b.test(20, 100)[0]
    # n = 2: even 2 of 2 is not enough evidence at alpha = 1e-5 (P = 1e-4)
    assert RateAlarm("x", 0.5, 0.01, 3.0, 1e-5).critical_count(2) is None


def test_thresholds_from_training_equal_hand_computation():
    rng = np.random.default_rng(3)
    n = 200
    x = rng.normal(size=n)
    # two members: raw rewards x + 1 and -x + 2. Offsets = member means; the anchored member std
    # (ddof 0, over 2 members) is |x - mean(x)|, the anchored mean reward 0.5 = ((x - m) - (x - m)) / 2 = 0
    raw = np.stack([x + 1.0, -x + 2.0], 1)
    mon = RewardHackingMonitor.from_training(raw, std_quantile=0.95, factor=2.0, alpha=0.05)
    np.testing.assert_allclose(mon.reward_offsets, [x.mean() + 1.0, -x.mean() + 2.0], rtol=1e-12)
    s = np.sort(np.abs(x - x.mean()))
    h = (n - 1) * 0.95  # linear interpolation between order statistics (numpy's default)
    lo = int(math.floor(h))
    cutoff = s[lo] + (h - lo) * (s[lo + 1] - s[lo])
    assert mon.disagreement.cutoff == pytest.approx(cutoff, rel=1e-12)
    assert mon.disagreement.nominal == (s > cutoff).sum() / n == 10 / n
    assert (mon.disagreement.factor, mon.disagreement.alpha) == (2.0, 0.05)
    assert mon.ood is None and mon.alarm_on == ("disagreement",)
    # ood: the i-th of n sorted reference distances sits at percentile i / (n + 1); beyond 0.99
    # are those with i > 0.99 (n + 1)
    feats = rng.normal(size=(300, 3))
    density = fit_density(feats)
    mon = RewardHackingMonitor.from_training(raw, density=density)
    assert mon.ood.cutoff == 0.99
    assert mon.ood.nominal == pytest.approx(sum(i / 301 > 0.99 for i in range(1, 301)) / 300) == 0.01


def test_update_metrics_equal_hand_computation():
    train = 0.2 * np.random.default_rng(4).normal(size=(200, 2))
    mon = RewardHackingMonitor.from_training(train, std_quantile=0.9, patience=1, warn=False)
    off = train.mean(0)
    batch = np.array([[1.0, 3.0], [0.5, 0.5], [-1.0, 2.0], [0.2, 0.3]])
    gold = np.array([1.0, 2.0, 3.0, 4.0])
    st = mon.update(batch, gold=gold)
    a = batch - off
    std = np.abs(a[:, 0] - a[:, 1]) / 2
    assert st.disagreement == pytest.approx(std.mean())
    count = int((std > mon.disagreement.cutoff).sum())
    assert st.disagreement_rate == count / 4
    assert st.disagreement_p == pytest.approx(_binom_sf(count, 4, mon.disagreement.nominal))
    assert st.proxy_drift == pytest.approx(a.mean())
    train_means = (train - off).mean(1)
    assert st.proxy_drift_z == pytest.approx(a.mean() / train_means.std())
    assert (st.gold_mean, st.proxy_gain, st.gold_gain, st.gap) == (2.5, 0.0, 0.0, 0.0)
    # already anchored rewards give the same step; the gap counts from the first step with gold
    st2 = mon.update(a + 1.0, anchored=True, gold=gold + 0.25)
    assert st2.proxy_drift == pytest.approx(a.mean() + 1.0)
    assert st2.proxy_gain == pytest.approx(1.0) and st2.gold_gain == pytest.approx(0.25)
    assert st2.gap == pytest.approx(0.75)
    assert st2.metrics()["monitor/gap"] == pytest.approx(0.75)
    assert "monitor/ood_rate" not in st2.metrics()  # NaN without a density: left out
    df = mon.to_pandas()
    assert list(df.step) == [0, 1] and df.n.tolist() == [4, 4]


def _calm_and_wild(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4000, 4)), lambda s: s * rng.normal(size=(64, 4))


def test_alarm_needs_patience_then_latches_and_warns():
    train, batch = _calm_and_wild()
    mon = RewardHackingMonitor.from_training(train, patience=2, stop_on_alarm=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on training-like batches
        steps = [mon.update(batch(1.0)) for _ in range(10)]
    assert not any(s.alarm for s in steps) and not mon.should_stop
    wild = mon.update(batch(4.0))
    assert wild.signals == ("disagreement",) and not wild.alarm  # one step over: not yet
    with pytest.warns(RewardHackingWarning, match="monitor step 11"):
        second = mon.update(batch(4.0))
    assert second.alarm and mon.alarm_step == 11 and mon.should_stop
    assert mon.update(batch(1.0)).alarm  # latched
    mon.reset()
    assert not mon.alarmed and mon.history == []


def test_no_false_alarm_rate_above_alpha_on_training_like_batches():
    # 400 batches of 64 responses drawn like the training responses: per-step signal rate <= alpha
    train, batch = _calm_and_wild(1)
    mon = RewardHackingMonitor.from_training(train, patience=1, warn=False)
    flagged = sum(bool(mon.update(batch(1.0)).signals) for _ in range(400))
    crit = mon.disagreement.critical_count(64)
    assert flagged / 400 <= 0.02, (flagged, crit)


def test_baseline_steps_raise_the_nominal_rate_to_the_starting_policy():
    train, batch = _calm_and_wild(2)
    mon = RewardHackingMonitor.from_training(train, patience=1, baseline_steps=3, warn=False)
    nominal = mon.disagreement.nominal
    cutoff = mon.disagreement.cutoff
    starts = [batch(1.6) for _ in range(3)]  # the starting policy is already more disputed than training
    pooled = np.mean([
        ((b - mon.reward_offsets).std(1) > cutoff).mean() for b in starts
    ])
    for b in starts:
        assert not mon.update(b).alarm  # never during the baseline
    assert mon.disagreement.nominal == pytest.approx(max(nominal, pooled)) and pooled > 3 * nominal
    assert mon.disagreement.cutoff == cutoff
    assert not mon.update(batch(1.6)).signals  # as disputed as at the start: quiet
    assert mon.update(batch(6.0)).alarm  # much further out: alarm
    mon.reset()
    assert mon.disagreement.nominal == nominal


def test_bad_input():
    train = np.random.default_rng(0).normal(size=(500, 3))
    with pytest.raises(ValueError, match="at least 2 members"):
        RewardHackingMonitor.from_training(train[:, :1])
    with pytest.raises(ValueError, match="std_quantile"):
        RewardHackingMonitor.from_training(train, std_quantile=1.0)
    with pytest.raises(ValueError, match="no training response has an anchored member std above"):
        RewardHackingMonitor.from_training(np.stack([train[:, 0], train[:, 0]], 1))  # members agree exactly
    with pytest.raises(ValueError, match="reward_offsets has 2 values for 3 members"):
        RewardHackingMonitor.from_training(train, reward_offsets=[0.0, 0.0])
    with pytest.raises(ValueError, match="anchored=True needs"):
        RewardHackingMonitor.from_training(train, anchored=True)
    with pytest.raises(ValueError, match="factor"):
        RewardHackingMonitor.from_training(train, factor=0.5)
    with pytest.raises(ValueError, match="alpha"):
        RewardHackingMonitor.from_training(train, alpha=1.5)
    with pytest.raises(ValueError, match="alarm_on"):
        RewardHackingMonitor.from_training(train, alarm_on=("gold",))
    with pytest.raises(ValueError, match="patience"):
        RewardHackingMonitor.from_training(train, patience=0)
    with pytest.raises(ValueError, match="99 reference responses, none beyond percentile 0.99; need at least 100"):
        RewardHackingMonitor.from_training(train, density=fit_density(train[:99]))
    RewardHackingMonitor.from_training(train, density=fit_density(train[:100]))  # 100/101 > 0.99
    mon = RewardHackingMonitor.from_training(train, density=fit_density(train))
    batch = train[:8]
    with pytest.raises(ValueError, match="member_rewards has 2 members"):
        mon.update(batch[:, :2], ood=np.zeros(8))
    with pytest.raises(ValueError, match="pass ood="):
        mon.update(batch)
    with pytest.raises(ValueError, match="not both"):
        mon.update(batch, ood=np.zeros(8), features=batch)
    with pytest.raises(ValueError, match=r"ood must hold density percentiles in \[0, 1\]"):
        mon.update(batch, ood=np.full(8, 2.0))
    with pytest.raises(ValueError, match="ood/features give 7 responses"):
        mon.update(batch, ood=np.zeros(7))
    with pytest.raises(ValueError, match="gold has 3 values for 8"):
        mon.update(batch, ood=np.zeros(8), gold=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="member_rewards"):
        mon.update(np.full((8, 3), np.nan), ood=np.zeros(8))
    with pytest.raises(ValueError, match=r"count \(5\) must be <= n \(4\)"):
        mon.disagreement.test(5, 4)
    with pytest.raises(TypeError, match="monitor must be a RewardHackingMonitor"):
        online_monitor_callback(object())
    with pytest.raises(ValueError, match="features_fn"):
        online_monitor_callback(mon)
    with pytest.raises(TypeError, match="reward_func must be auq's TRL reward function"):
        RewardHackingCallback(mon, lambda prompts, completions, **kw: [0.0] * len(prompts))


# ------------------------------------------------------------------ OnlineTrainer


@pytest.fixture(scope="module")
def online_paths(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("monitor_online")
    words = [f"w{i}" for i in range(12)]
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                            eos_token="<eos>").save_pretrained(root / "tok")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=2,
                     eos_token_id=3, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(cfg).save_pretrained(root / "policy")
    return str(root / "tok"), str(root / "policy"), words


def _online_trainer(online_paths, reward_fn, steps=6):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from auq.training.online import OnlineConfig, OnlineTrainer

    tok_path, policy_path, _ = online_paths
    cfg = OnlineConfig(algorithm="rloo", max_steps=steps, per_device_train_batch_size=4, k=4, max_new_tokens=4,
                       learning_rate=1e-3, seed=0, disable_tqdm=True)
    return OnlineTrainer(AutoModelForCausalLM.from_pretrained(policy_path), None,
                         AutoTokenizer.from_pretrained(tok_path), reward_fn, ["<bos>"], cfg)


def _word_counts(words, completions):
    x = np.zeros((len(completions), len(words)))
    for i, c in enumerate(completions):
        for w in c.split():
            if w in words:
                x[i, words.index(w)] += 1
    return x


def test_online_trainer_logs_and_stops_on_alarm(online_paths):
    words = online_paths[2]
    # members disagree about words w6..w11 only; the training responses used w0..w5 only
    member_w = np.zeros((12, 3))
    member_w[:6] = [0.1, 0.1, 0.1]
    member_w[6:] = np.array([[1.0, -1.0, 0.0]] * 6) * 3.0

    def reward_fn(prompts, completions):
        return _word_counts(words, completions) @ member_w

    rng = np.random.default_rng(0)
    train_texts = [" ".join(rng.choice(words[:6], size=3)) for _ in range(400)]
    train = reward_fn(None, train_texts) + 0.01 * rng.normal(size=(400, 3))
    density = fit_density(_word_counts(words, train_texts) + 0.05 * rng.normal(size=(400, 12)))
    seen = []

    def after(trainer, out):
        seen.append(out["monitor"])

    # 1) without stop_on_alarm: all steps run, metrics land in the trainer's records
    mon = RewardHackingMonitor.from_training(train, density=density, patience=2, warn=False)
    tr = _online_trainer(online_paths, reward_fn)
    cb = online_monitor_callback(mon, features_fn=lambda p, c: _word_counts(words, c), then=after)
    tr.train(callback=cb)
    assert tr.step_count == 6 and tr.stop_reason is None and len(seen) == 6
    # the untrained policy writes any word: most responses are disputed -> alarm at the 2nd step
    assert mon.alarm_step == 1 and seen[1].alarm and "disagreement" in seen[0].signals
    rec = tr.history.records[0]
    assert rec["monitor/disagreement_rate"] == seen[0].disagreement_rate > 0.5
    assert rec["monitor/ood_rate"] == seen[0].ood_rate

    # 2) with stop_on_alarm: training ends after the alarm's step
    mon2 = RewardHackingMonitor.from_training(train, density=density, patience=2, warn=False, stop_on_alarm=True)
    tr2 = _online_trainer(online_paths, reward_fn)
    tr2.train(callback=online_monitor_callback(mon2, features_fn=lambda p, c: _word_counts(words, c)))
    assert tr2.step_count == 2 and "alarm at monitor step 1" in tr2.stop_reason
    assert len(tr2.history.records) == 2
    # a later train() starts afresh (stop_reason cleared) and stops again at once: the alarm is latched
    tr2.train(steps=3, callback=online_monitor_callback(mon2, features_fn=lambda p, c: _word_counts(words, c)))
    assert tr2.step_count == 3


def test_online_monitor_sees_the_rewards_the_trainer_used(online_paths):
    words = online_paths[2]
    member_w = np.random.default_rng(1).normal(size=(12, 3))
    calls = []

    def reward_fn(prompts, completions):
        r = _word_counts(words, completions) @ member_w
        calls.append(r)
        return r

    train = np.random.default_rng(2).normal(size=(300, 3))
    mon = RewardHackingMonitor.from_training(train, warn=False)
    got = []
    tr = _online_trainer(online_paths, reward_fn, steps=2)
    tr.train(callback=online_monitor_callback(mon, gold_fn=lambda p, c: np.ones(len(c)),
                                              then=lambda t, o: got.append(o["member_rewards"])))
    assert len(calls) == 2  # the monitor scored nothing itself
    a = calls[0] - mon.reward_offsets
    assert mon.history[0].disagreement == pytest.approx(a.std(1).mean())
    assert mon.history[1].gold_mean == 1.0 and mon.history[1].gold_gain == 0.0
    with pytest.raises(TypeError, match="reason"):
        tr.request_stop("")


# ------------------------------------------------------------------ TRL GRPOTrainer


@pytest.fixture(scope="module")
def fitted_ensemble(tmp_path_factory):
    from _tiny_models import TEXTS, make_tiny_backbone

    from auq.data import PreferenceDataset
    from auq.models import RewardEnsemble

    path = make_tiny_backbone(tmp_path_factory.mktemp("rm_monitor"), "gpt2", seed=0)
    ens = RewardEnsemble.from_backbone(path, kind="heads", n_members=4, seed=0).eval()
    rng = np.random.default_rng(0)
    words = " ".join(TEXTS).split()
    prompts = [f"Human: {' '.join(rng.choice(words, 4))}? Assistant:" for _ in range(60)]
    chosen = [" " + " ".join(rng.choice(words, 5)) for _ in range(60)]
    rejected = [" " + " ".join(rng.choice(words, 5)) for _ in range(60)]
    train = PreferenceDataset(prompts, chosen, rejected)
    ens.fit_uncertainty(train, device="cpu", progress=False)  # density over 120 responses, 32 dims
    return ens, train


def _grpo(tmp_path, fn, callback, max_steps, kind="grpo"):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from _tiny_models import SENTENCES, build_tiny_lm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = build_tiny_lm(str(tmp_path / "lm"), seed=0)
    ds = datasets.Dataset.from_dict({"prompt": [s.split(" ", 3)[-1] for s in SENTENCES[:8]]})
    config_cls, trainer_cls = (trl.GRPOConfig, trl.GRPOTrainer) if kind == "grpo" else (trl.RLOOConfig, trl.RLOOTrainer)
    cfg = config_cls(
        output_dir=str(tmp_path / kind), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, max_steps=max_steps, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, seed=0, learning_rate=1e-3, disable_tqdm=True, dataloader_num_workers=0,
    )
    torch.manual_seed(0)
    trainer = trainer_cls(model=AutoModelForCausalLM.from_pretrained(lm), reward_funcs=[fn], args=cfg,
                              train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(lm),
                              callbacks=[callback])
    trainer.train()
    return trainer


def test_grpo_trainer_logs_monitor_metrics(fitted_ensemble, tmp_path):
    pytest.importorskip("trl")
    from auq.integrations.trl import uncertainty_penalized_reward_func

    ens, train = fitted_ensemble
    mon = RewardHackingMonitor.from_model(ens, train, ood_percentile=0.95, warn=False)
    assert mon.ood is not None and mon.ood.nominal == pytest.approx(6 / 120)
    np.testing.assert_array_equal(mon.reward_offsets, ens.reward_offsets)
    fn = uncertainty_penalized_reward_func(ens, method="lcb", coef=0.5)
    seen = []
    fn.observers.append(lambda f, p, c, kw: seen.append((list(p), list(c), f.last_features.copy())))
    cb = RewardHackingCallback(mon, fn, gold_fn=lambda p, c: [float(len(x)) for x in c])
    trainer = _grpo(tmp_path, fn, cb, max_steps=2)
    logs = [h for h in trainer.state.log_history if "monitor/disagreement" in h]
    assert len(logs) == 2 and len(mon.history) == 2
    for log, step in zip(logs, mon.history):
        assert log["monitor/disagreement"] == pytest.approx(step.disagreement, rel=1e-6)
        assert log["monitor/ood_rate"] == pytest.approx(step.ood_rate)
        assert log["monitor/ood_mean"] == pytest.approx(step.ood_mean, rel=1e-6)
        assert log["monitor/gold_mean"] == pytest.approx(step.gold_mean, rel=1e-6)
    # anchored on the same training offsets: the monitor's disagreement is the reward function's std
    assert mon.history[-1].disagreement == pytest.approx(float(fn.last_std.mean()), rel=1e-6)
    # the features came from the reward function's own pass and equal a separate encoding
    prompts, completions, feats = seen[-1]
    np.testing.assert_allclose(feats, response_features(ens, prompts, completions), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mon.history[-1].ood_mean, ens.density.percentile(feats).mean(), rtol=1e-9)
    assert trainer.state.global_step == 2


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_trl_trainer_stops_when_the_monitor_asks(kind, fitted_ensemble, tmp_path):
    pytest.importorskip("trl")
    from auq.integrations.trl import uncertainty_penalized_reward_func

    ens, _ = fitted_ensemble
    # every response counts as disputed (cutoff 0): the alarm fires on the first generation batch
    mon = RewardHackingMonitor(ood=None, disagreement=RateAlarm("disagreement", 0.0, 0.01),
                               reward_offsets=ens.reward_offsets, drift_scale=1.0, patience=1,
                               stop_on_alarm=True, warn=False)
    fn = uncertainty_penalized_reward_func(ens, method="mean")
    trainer = _grpo(tmp_path, fn, RewardHackingCallback(mon, fn), max_steps=5, kind=kind)
    assert mon.alarm_step == 0
    assert trainer.state.global_step == 1  # of 5
    assert any("monitor/alarm" in h and h["monitor/alarm"] == 1.0 for h in trainer.state.log_history)


def test_alarm_on_ood_without_a_density_is_refused():
    train = np.random.default_rng(0).normal(size=(200, 4))
    with pytest.raises(ValueError, match="alarm_on: 'ood' needs a feature density"):
        RewardHackingMonitor.from_training(train, alarm_on=("ood",))

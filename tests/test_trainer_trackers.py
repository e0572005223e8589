"""report_to through Accelerate's trackers, for all three trainers: TensorBoard events hold the
logged losses at their steps; "none" writes nothing; an unknown tracker is a clear ValueError."""

from __future__ import annotations

import glob
import os

import pytest
from _trainer_fixtures import make_tiny_bert, synthetic_dataset

from auq.data import PreferenceDataset
from auq.training import (
    OnlineConfig,
    OnlineTrainer,
    RewardModelTrainer,
    RewardTrainerConfig,
    UncertaintyDPOConfig,
    UncertaintyDPOTrainer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = PreferenceDataset(["the cat", "a helpful", "please tell", "the weather"],
                          [" sat on the mat", " answer is short", " me how", " is sunny"],
                          [" is rude", " answer is long", " help", " is wind"])


def _scalars(logdir: str, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = []
    for f in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)):
        acc = EventAccumulator(f)
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.step, e.value) for e in acc.Scalars(tag)]
    return out


def load_tiny_lm(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def _dpo(tiny_lm_dir, out, **kw):
    from transformers import AutoTokenizer

    cfg = UncertaintyDPOConfig(output_dir=str(out), max_steps=4, per_device_train_batch_size=2, logging_steps=2,
                               learning_rate=1e-2, disable_tqdm=True, **kw)
    return UncertaintyDPOTrainer(load_tiny_lm(tiny_lm_dir), cfg, PAIRS, AutoTokenizer.from_pretrained(tiny_lm_dir))


def _online(tiny_lm_dir, out, **kw):
    from transformers import AutoTokenizer

    cfg = OnlineConfig(output_dir=str(out), max_steps=4, per_device_train_batch_size=1, k=2, max_new_tokens=3,
                       logging_steps=2, disable_tqdm=True, **kw)
    def reward(prompts, completions):
        return [[len(c), len(c) + 1.0] for c in completions]

    return OnlineTrainer(load_tiny_lm(tiny_lm_dir), None, AutoTokenizer.from_pretrained(tiny_lm_dir), reward,
                         ["the cat", "a helpful"], cfg)


def _reward(tmp_path, out, **kw):
    from auq.models import RewardEnsemble

    bert = make_tiny_bert(str(tmp_path / "bert"))
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, seed=0, train_trunk=True)
    cfg = RewardTrainerConfig(output_dir=str(out), max_steps=4, per_device_train_batch_size=4, logging_steps=2,
                              max_length=32, disable_tqdm=True, fit_uncertainty=False, **kw)
    return RewardModelTrainer(model, cfg, synthetic_dataset(16, seed=1))


def _losses(trainer, result) -> list[tuple[int, float]]:
    if isinstance(trainer, OnlineTrainer):
        return [(int(r["step"]) + 1, r["loss"]) for r in result.records if (int(r["step"]) + 1) % 2 == 0]
    log = result if isinstance(result, list) else list(result.log_history)
    return [(e["step"], e["loss"]) for e in log if "loss" in e]


@pytest.mark.parametrize("which", ["dpo", "online", "reward"])
def test_tensorboard_holds_the_logged_losses(which, tiny_lm_dir, tmp_path):
    pytest.importorskip("tensorboard")
    make = {"dpo": lambda **kw: _dpo(tiny_lm_dir, tmp_path / "out", **kw),
            "online": lambda **kw: _online(tiny_lm_dir, tmp_path / "out", **kw),
            "reward": lambda **kw: _reward(tmp_path, tmp_path / "out", **kw)}[which]
    trainer = make(report_to="tensorboard", logging_dir=str(tmp_path / "tb"))
    result = trainer.train()
    expected = _losses(trainer, result)
    assert [s for s, _ in expected] == [2, 4]
    got = _scalars(str(tmp_path / "tb"), "loss")
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32 in the events
    assert _scalars(str(tmp_path / "tb"), "learning_rate")  # every numeric entry is logged


@pytest.mark.parametrize("which", ["dpo", "online"])
def test_report_to_none_writes_no_tracker_files(which, tiny_lm_dir, tmp_path):
    trainer = (_dpo if which == "dpo" else _online)(tiny_lm_dir, tmp_path / "out")
    assert not trainer.trackers.enabled
    trainer.train()
    assert not os.path.exists(tmp_path / "out" / "runs")


def test_unknown_tracker_is_a_value_error():
    for cls in (RewardTrainerConfig, UncertaintyDPOConfig, OnlineConfig):
        with pytest.raises(ValueError, match="report_to must be one of 'none', 'all', 'tensorboard', 'wandb'"):
            cls(report_to=["tensorboard", "comet"])

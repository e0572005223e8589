"""The trainer family's shared settings: one set of names (transformers.TrainingArguments') and types
for RewardTrainerConfig, UncertaintyDPOConfig and OnlineConfig; old names as deprecated aliases."""

from __future__ import annotations

import dataclasses
import typing
import warnings

import pytest
import torch

from auq.training import OnlineConfig, RewardTrainerConfig, UncertaintyDPOConfig
from auq.training._args import TrainingArgumentsBase, create_scheduler

CONFIGS = (RewardTrainerConfig, UncertaintyDPOConfig, OnlineConfig)

SHARED = (
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "weight_decay", "lr_scheduler_type",
    "warmup_ratio", "warmup_steps", "max_grad_norm", "seed", "logging_steps", "save_steps",
    "save_total_limit", "bf16", "fp16", "disable_tqdm", "report_to", "logging_dir",
)  # fmt: skip


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_config_exposes_the_shared_settings_with_the_same_names_and_types(cls):
    import transformers

    assert issubclass(cls, TrainingArgumentsBase)
    base_hints = typing.get_type_hints(TrainingArgumentsBase)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    # transformers 5 folded warmup_ratio into warmup_steps and dropped logging_dir (4.x names, kept)
    hf = {f.name for f in dataclasses.fields(transformers.TrainingArguments)} | {"warmup_ratio", "logging_dir"}
    for name in SHARED:
        assert name in names, name
        assert hints[name] == base_hints[name], name
        assert name in hf, f"{name} is not a transformers.TrainingArguments name"
    cfg = cls(output_dir="x")
    assert isinstance(cfg.max_steps, int) and isinstance(cfg.num_train_epochs, float)
    assert cls.from_dict(cfg.to_dict()) == cfg


def _warns_and_maps(cls, old, value, **expected):
    with pytest.warns(FutureWarning, match=rf"{old}.*deprecated.*{next(iter(expected))}"):
        cfg = cls(output_dir="x", **{old: value})
    for k, v in expected.items():
        assert getattr(cfg, k) == v, (old, k)
    return cfg


def test_dpo_aliases_warn_and_map():
    _warns_and_maps(UncertaintyDPOConfig, "num_epochs", 3, num_train_epochs=3.0)
    _warns_and_maps(UncertaintyDPOConfig, "batch_size", 5, per_device_train_batch_size=5)
    _warns_and_maps(UncertaintyDPOConfig, "mixed_precision", "bf16", bf16=True, fp16=False)
    _warns_and_maps(UncertaintyDPOConfig, "mixed_precision", "fp16", fp16=True, bf16=False)
    _warns_and_maps(UncertaintyDPOConfig, "mixed_precision", "no", fp16=False, bf16=False)
    _warns_and_maps(UncertaintyDPOConfig, "progress", False, disable_tqdm=True)
    _warns_and_maps(UncertaintyDPOConfig, "progress", True, disable_tqdm=False)
    _warns_and_maps(UncertaintyDPOConfig, "normalize", "n", weight_normalization="n")
    with pytest.warns(FutureWarning, match="max_steps=None"):
        assert UncertaintyDPOConfig(max_steps=None).max_steps == -1
    cfg = UncertaintyDPOConfig(per_device_train_batch_size=6)
    with pytest.warns(FutureWarning, match="per_device_train_batch_size"):
        assert cfg.batch_size == 6  # reading the old name still works
    with pytest.warns(FutureWarning, match="bf16"):
        assert UncertaintyDPOConfig(fp16=True).mixed_precision == "fp16"
    with pytest.warns(FutureWarning, match="disable_tqdm"):
        assert UncertaintyDPOConfig(disable_tqdm=True).progress is False


def test_online_aliases_warn_and_map_by_meaning():
    _warns_and_maps(OnlineConfig, "steps", 7, max_steps=7)
    _warns_and_maps(OnlineConfig, "batch_prompts", 3, per_device_train_batch_size=3)
    # passes over each rollout batch: TRL's num_ppo_epochs, not passes over the prompts
    cfg = _warns_and_maps(OnlineConfig, "epochs", 2, num_ppo_epochs=2)
    assert cfg.num_train_epochs == 1.0
    _warns_and_maps(OnlineConfig, "save_every", 4, save_steps=4)
    _warns_and_maps(OnlineConfig, "progress", False, disable_tqdm=True)
    _warns_and_maps(OnlineConfig, "penalty", "lcb", penalty_method="lcb")
    # a config saved with the old names still loads
    with pytest.warns(FutureWarning):
        assert OnlineConfig.from_dict({"steps": 3, "penalty": "wco"}).penalty_method == "wco"


# to_dict() of the previous release's configs (old names, DPO's max_steps=None, online's output_dir=None)
OLD_DPO = {"output_dir": "o", "loss_type": "sigmoid", "beta": 0.1, "learning_rate": 5e-06, "weight_decay": 0.0,
           "num_epochs": 2, "max_steps": None, "batch_size": 3, "gradient_accumulation_steps": 1,
           "max_grad_norm": 1.0, "max_length": 512, "max_prompt_length": None, "use_weights": True,
           "use_targets": True, "normalize": "n", "robust_epsilon": 0.1, "robust_from_targets": False,
           "robust_max_rate": 0.45, "precompute_ref_logps": False, "disable_dropout": True, "shuffle": True,
           "seed": 0, "logging_steps": 10, "save_steps": 5, "mixed_precision": "bf16", "progress": False,
           "extra": {}}
OLD_ONLINE = {"algorithm": "rloo", "steps": 7, "batch_prompts": 3, "k": 4, "max_new_tokens": 16, "temperature": 1.0,
              "learning_rate": 1e-05, "weight_decay": 0.0, "max_grad_norm": 1.0, "penalty": "lcb",
              "penalty_coef": 1.0, "kl_coef": 0.05, "kl_estimator": "k1", "kl_in_reward": True, "epochs": 2,
              "minibatch_size": None, "clip_range": 0.2, "normalize_advantages": False, "vf_coef": 0.1,
              "gamma": 1.0, "lam": 0.95, "clip_range_value": 0.2, "seed": 0, "save_every": 2, "output_dir": None,
              "progress": False}


def test_previous_release_configs_load_with_their_meaning():
    with pytest.warns(FutureWarning):
        dpo = UncertaintyDPOConfig.from_dict(OLD_DPO)
    assert (dpo.num_train_epochs, dpo.max_steps, dpo.per_device_train_batch_size) == (2.0, -1, 3)
    assert (dpo.bf16, dpo.fp16, dpo.disable_tqdm, dpo.weight_normalization) == (True, False, True, "n")
    assert (dpo.lr_scheduler_type, dpo.warmup_steps, dpo.save_steps) == ("constant", 0, 5)  # no schedule, as before
    with pytest.warns(FutureWarning):
        online = OnlineConfig.from_dict(OLD_ONLINE)
    assert (online.max_steps, online.per_device_train_batch_size, online.num_ppo_epochs) == (7, 3, 2)
    assert (online.save_steps, online.disable_tqdm, online.penalty_method) == (2, True, "lcb")
    assert online.output_dir == "auq-online" and online.lr_scheduler_type == "constant"
    with pytest.raises(ValueError, match="unknown OnlineConfig field"):
        OnlineConfig.from_dict({"stepz": 3})


@pytest.mark.parametrize(
    ("cls", "old", "new", "value"),
    [
        (UncertaintyDPOConfig, "num_epochs", "num_train_epochs", 2),
        (UncertaintyDPOConfig, "mixed_precision", "bf16", "bf16"),
        (UncertaintyDPOConfig, "mixed_precision", "fp16", "fp16"),
        (UncertaintyDPOConfig, "progress", "disable_tqdm", False),
        (UncertaintyDPOConfig, "normalize", "weight_normalization", "n"),
        (OnlineConfig, "steps", "max_steps", 3),
        (OnlineConfig, "penalty", "penalty_method", "lcb"),
    ],
)
def test_old_and_new_name_together_is_a_type_error(cls, old, new, value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(TypeError, match=rf"{old}.*{new}|{new}.*{old}"):
            cls(**{old: value, new: getattr(cls(), new)})


def test_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for cls in CONFIGS:
            cls(output_dir="x", max_steps=5, per_device_train_batch_size=2, disable_tqdm=True, seed=1)


@pytest.mark.parametrize("cls", CONFIGS)
def test_shared_settings_are_checked_once_for_all(cls):
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        cls(lr_scheduler_type="step")
    with pytest.raises(ValueError, match="warmup_ratio"):
        cls(warmup_ratio=1.5)
    with pytest.raises(ValueError, match="report_to"):
        cls(report_to="mlflow")
    with pytest.raises(TypeError, match="report_to"):
        cls(report_to=3)
    with pytest.raises(ValueError, match="max_steps"):
        cls(max_steps=-2)
    with pytest.raises(TypeError, match="per_device_train_batch_size"):
        cls(per_device_train_batch_size=2.5)
    assert cls(report_to=["none"]).log_with() is None
    assert cls(report_to=["tensorboard", "tensorboard"]).log_with() == ["tensorboard"]
    assert cls(report_to="all").log_with() == "all"
    assert cls(output_dir="o").tracker_dir().endswith("runs")


def test_total_steps_follow_max_steps_else_epochs():
    cfg = TrainingArgumentsBase(num_train_epochs=2.5)
    assert cfg.total_steps(steps_per_epoch=4) == 10
    assert TrainingArgumentsBase(max_steps=3, num_train_epochs=9).total_steps(4) == 3


@pytest.mark.parametrize(("name", "expected"), [
    ("linear", [0.0, 0.5, 1.0, 2 / 3, 1 / 3]),
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),
    ("cosine", [0.0, 0.5, 1.0, 0.75, 0.25]),
])  # fmt: skip
def test_scheduler_factory_warmup_then_decay(name, expected):
    # hand computation: warmup s/2 for s < 2, then linear (5-s)/3 or cosine 0.5(1+cos(pi(s-2)/3))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = create_scheduler(opt, TrainingArgumentsBase(warmup_steps=2, lr_scheduler_type=name), 5)
    got = []
    for _ in range(5):
        got.append(s.get_last_lr()[0])
        opt.step()
        s.step()
    assert got == pytest.approx(expected, abs=1e-12)
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s2 = create_scheduler(opt2, TrainingArgumentsBase(warmup_ratio=0.4, lr_scheduler_type=name), 5)
    assert s2.lr_lambdas[0](1) == pytest.approx(expected[1])  # ceil(0.4 * 5) = 2 warmup steps

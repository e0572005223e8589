"""The settings every auq trainer shares, under ``transformers.TrainingArguments`` names.

:class:`TrainingArgumentsBase` is the base of :class:`~auq.training.RewardTrainerConfig`,
:class:`~auq.training.UncertaintyDPOConfig` and :class:`~auq.training.OnlineConfig`: output folder,
length of training, batch size, optimiser, learning-rate schedule, clipping, seed, logging,
checkpoints, precision, progress bar and experiment trackers are named and checked once. A trainer
overrides defaults (e.g. the DPO learning rate) but never renames a setting.

Old names of the DPO and online configs (``num_epochs``, ``batch_size``, ``mixed_precision``,
``progress``, ``steps``, ``batch_prompts``, ``epochs``, ``save_every``, ``penalty``) are accepted
for one release through :func:`renamed_fields`: a ``FutureWarning`` names the new field, and
passing an old and its new name together is a ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._checks import check_choice, check_float, check_int, renamed_kwarg
from .._io import atomic_write_text

__all__ = ["TrainingArgumentsBase", "renamed_fields", "create_scheduler", "total_steps"]

SCHEDULERS = ("linear", "cosine", "constant")
TRACKERS = ("tensorboard", "wandb")


def _rename_kwarg(kwargs: dict[str, Any], old: str, new: str, owner: str) -> Any:
    """Pop the deprecated ``old`` from ``kwargs`` (:func:`auq._checks.renamed_kwarg`: a
    ``FutureWarning`` naming ``new``; ``TypeError`` when a new name is passed too); return its value."""
    news = new.split("|")
    label = "/".join(news)
    renamed_kwarg(kwargs, old, label, where=f"{owner}()", new_given=any(n in kwargs for n in news), stacklevel=4)
    return kwargs.pop(label)


Rename = tuple  # (new, convert or None[, read])


def renamed_fields(renames: Mapping[str, Rename]) -> Callable:
    """Class decorator: accept the old field names ``renames`` maps to new ones, for one release.

    ``renames[old] = (new, convert[, read])``: ``new`` names the field (``"a|b"`` when the old value
    becomes two fields); ``convert(value) -> {field: value}`` translates an old value whose meaning
    changed (e.g. ``progress=False`` -> ``{"disable_tqdm": True}``), ``None`` passes it to ``new``
    as it is; ``read(config)`` gives the old attribute's value (default: the new field's). Reading
    ``config.<old>`` warns.
    """

    def decorate(cls: type) -> type:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            for old, (new, convert, *_) in renames.items():
                if old in kwargs:
                    value = _rename_kwarg(kwargs, old, new, cls.__name__)
                    kwargs.update({new: value} if convert is None else convert(value))
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        for old, (new, _, *read) in renames.items():
            setattr(cls, old, property(_old_getter(old, new, cls.__name__, read[0] if read else None)))
        cls._renamed_fields = {**getattr(cls, "_renamed_fields", {}), **{o: r[0] for o, r in renames.items()}}
        return cls

    return decorate


def _old_getter(old: str, new: str, owner: str, read: Callable | None) -> Callable[[Any], Any]:
    def get(self: Any) -> Any:
        names = " or ".join(repr(n) for n in new.split("|"))
        warnings.warn(f"{owner}.{old} is deprecated; read {names}", FutureWarning, stacklevel=2)
        return read(self) if read is not None else getattr(self, new)

    return get


def from_mixed_precision(value: Any) -> dict[str, Any]:
    """Old ``mixed_precision`` ("no", "bf16", "fp16") as ``bf16``/``fp16`` flags."""
    value = check_choice(value, "mixed_precision", ("no", "bf16", "fp16"))
    return {"bf16": value == "bf16", "fp16": value == "fp16"}


def from_progress(value: Any) -> dict[str, Any]:
    """Old ``progress`` as ``disable_tqdm`` (its negation)."""
    check_choice(value, "progress", (True, False))
    return {"disable_tqdm": not value}


#: ``renamed_fields`` entries shared by the configs that had these old names
MIXED_PRECISION_RENAME = ("bf16|fp16", from_mixed_precision, lambda cfg: cfg.mixed_precision_mode())
PROGRESS_RENAME = ("disable_tqdm", from_progress, lambda cfg: not cfg.disable_tqdm)


@dataclass
class TrainingArgumentsBase:
    """Settings shared by every auq trainer (names and meaning of ``transformers.TrainingArguments``).

    Parameters
    ----------
    output_dir : str
        Where ``checkpoint-<step>/`` folders (and by default the tracker logs) are written.
    num_train_epochs : float
        Passes over the training data (prompts, for the online trainer); used when
        ``max_steps <= 0``.
    max_steps : int
        Total optimizer (online: rollout) steps; ``-1`` derives them from ``num_train_epochs``.
    per_device_train_batch_size : int
        Pairs (online: prompts) per process and micro-batch.
    gradient_accumulation_steps : int
        Micro-batches per optimizer step.
    learning_rate, weight_decay : float
        Peak learning rate and decoupled weight decay of AdamW.
    lr_scheduler_type : {"linear", "cosine", "constant"}
        Decay after warmup (``transformers.get_scheduler``); ``"constant"`` keeps the peak.
    warmup_ratio, warmup_steps : float, int
        Linear warmup over ``warmup_steps`` steps, or ``ceil(warmup_ratio · total steps)`` when
        ``warmup_steps == 0``.
    max_grad_norm : float or None
        Gradient clipping threshold (global L2 norm); ``None`` or 0: no clipping.
    seed : int
        Seed of the RNGs and the data order.
    logging_steps : int
        Log the mean metrics every ``logging_steps`` steps.
    save_steps, save_total_limit : int or None
        Write ``checkpoint-<step>/`` every ``save_steps`` steps; keep the newest
        ``save_total_limit`` of them (``None``: all).
    bf16, fp16 : bool (bf16 also "auto")
        Mixed precision through Accelerate; ``bf16="auto"``: on when CUDA supports it.
    disable_tqdm : bool
        Hide the progress bar.
    report_to : str or list of str
        Experiment trackers through Accelerate: ``"none"``, ``"tensorboard"``, ``"wandb"``,
        ``"all"`` (every installed one) or a list.
    logging_dir : str or None
        Tracker folder; default ``<output_dir>/runs``.

    Examples
    --------
    >>> TrainingArgumentsBase(output_dir="out", max_steps=10).total_steps(steps_per_epoch=4)
    10
    """

    output_dir: str = "auq-output"
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    seed: int = 42
    logging_steps: int = 10
    save_steps: int | None = None
    save_total_limit: int | None = None
    bf16: bool | str = False
    fp16: bool = False
    disable_tqdm: bool = False
    report_to: str | list[str] = "none"
    logging_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir):
            raise TypeError(f"output_dir must be a non-empty path, got {self.output_dir!r}")
        self.output_dir = os.fspath(self.output_dir)
        self.num_train_epochs = check_float(self.num_train_epochs, "num_train_epochs", minimum=0.0,
                                            inclusive=(False, True))
        if self.max_steps is None:  # the DPO config's old "off"
            warnings.warn("max_steps=None is deprecated; use -1 (derive the steps from num_train_epochs)",
                          FutureWarning, stacklevel=3)
            self.max_steps = -1
        self.max_steps = check_int(self.max_steps, "max_steps", minimum=-1)
        check_int(self.per_device_train_batch_size, "per_device_train_batch_size", minimum=1)
        check_int(self.gradient_accumulation_steps, "gradient_accumulation_steps", minimum=1)
        self.learning_rate = check_float(self.learning_rate, "learning_rate", minimum=0.0)
        self.weight_decay = check_float(self.weight_decay, "weight_decay", minimum=0.0)
        check_choice(self.lr_scheduler_type, "lr_scheduler_type", SCHEDULERS)
        self.warmup_ratio = check_float(self.warmup_ratio, "warmup_ratio", minimum=0.0, maximum=1.0)
        check_int(self.warmup_steps, "warmup_steps", minimum=0)
        if self.max_grad_norm is not None:
            self.max_grad_norm = check_float(self.max_grad_norm, "max_grad_norm", minimum=0.0)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.logging_steps, "logging_steps", minimum=1)
        for name in ("save_steps", "save_total_limit"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        check_choice(self.bf16, "bf16", (True, False, "auto"))
        check_choice(self.fp16, "fp16", (True, False))
        if self.fp16 and self.bf16 is True:
            raise ValueError("bf16 and fp16: choose one mixed precision, got both True")
        check_choice(self.disable_tqdm, "disable_tqdm", (True, False))
        self.report_to = _check_report_to(self.report_to)
        if self.logging_dir is not None:
            self.logging_dir = os.fspath(self.logging_dir)

    # ------------------------------------------------------------------ derived settings
    def mixed_precision_mode(self) -> str:
        """Accelerate's ``mixed_precision`` for these flags: ``"no"``, ``"bf16"`` or ``"fp16"``."""
        import torch

        if self.fp16:
            return "fp16"
        if self.bf16 is True or (
            self.bf16 == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        ):
            return "bf16"
        return "no"

    def total_steps(self, steps_per_epoch: int) -> int:
        """``max_steps`` when positive, else ``ceil(num_train_epochs · steps_per_epoch)`` (at least 1)."""
        if self.max_steps > 0:
            return self.max_steps
        return max(1, math.ceil(self.num_train_epochs * max(int(steps_per_epoch), 1)))

    def log_with(self) -> list[str] | str | None:
        """``report_to`` as Accelerate's ``log_with`` (None for "none")."""
        if self.report_to == ["all"]:
            return "all"
        return list(self.report_to) or None

    def tracker_dir(self) -> str:
        """``logging_dir``, or ``<output_dir>/runs``."""
        return self.logging_dir or os.path.join(self.output_dir, "runs")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Build a config from :meth:`to_dict` output (old field names warn); unknown keys raise ``ValueError``."""
        if not isinstance(d, Mapping):
            raise TypeError(f"d must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} | set(getattr(cls, "_renamed_fields", {}))
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"d has unknown {cls.__name__} field(s) {unknown}")
        return cls(**dict(d))

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialise to JSON; also write it to ``path`` (atomically) when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            atomic_write_text(os.fspath(path), text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> Any:
        """Read a config from a JSON file path or a JSON string."""
        s = os.fspath(path_or_text)
        if os.path.isfile(s):
            with open(s, encoding="utf-8") as f:
                s = f.read()
        return cls.from_dict(json.loads(s))


def _check_report_to(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(v, str) for v in names):
        raise TypeError(f"report_to must be a tracker name or a list of them, got {value!r}")
    out: list[str] = []
    for v in names:
        check_choice(v, "report_to", ("none", "all", *TRACKERS))
        if v != "none" and v not in out:
            out.append(v)
    return ["all"] if "all" in out else out


def total_steps(config: TrainingArgumentsBase, steps_per_epoch: int) -> int:
    """Total optimizer steps of a run (see :meth:`TrainingArgumentsBase.total_steps`)."""
    return config.total_steps(steps_per_epoch)


def create_scheduler(optimizer: Any, config: TrainingArgumentsBase, num_training_steps: int) -> Any:
    """The learning-rate schedule of every auq trainer (``transformers.get_scheduler``).

    Warmup: ``warmup_steps``, else ``ceil(warmup_ratio · num_training_steps)``; ``"constant"`` with
    warmup becomes ``"constant_with_warmup"``. The trainers step it by hand once per optimizer step
    (the online trainer: once per rollout step), not through Accelerate (which would step it once
    per process). ``optimizer`` may be Accelerate's wrapper.

    Examples
    --------
    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> cfg = TrainingArgumentsBase(warmup_steps=2, lr_scheduler_type="linear")
    >>> s = create_scheduler(opt, cfg, num_training_steps=4)
    >>> lrs = []
    >>> for _ in range(4):
    ...     lrs.append(s.get_last_lr()[0]); opt.step(); s.step()
    >>> lrs
    [0.0, 0.5, 1.0, 0.5]
    """
    from transformers import get_scheduler

    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * num_training_steps)
    name = config.lr_scheduler_type
    if name == "constant" and warmup > 0:
        name = "constant_with_warmup"
    inner = getattr(optimizer, "optimizer", optimizer)
    return get_scheduler(name, inner, num_warmup_steps=warmup, num_training_steps=num_training_steps)

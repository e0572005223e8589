"""The reward trainer's settings (:class:`RewardTrainerConfig`) and what ``train()`` returns."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._checks import check_choice, check_float, check_int
from .._io import atomic_write_text

__all__ = ["RewardTrainerConfig", "TrainResult"]

_SCHEDULERS = ("linear", "cosine", "constant")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class RewardTrainerConfig:
    """Settings of :class:`RewardModelTrainer` (names follow TRL's ``RewardConfig``).

    Parameters
    ----------
    output_dir : str
        Where checkpoints (``checkpoint-<step>/``) are written.
    num_train_epochs : float, default 1.0
        Passes over the training data (ignored when ``max_steps > 0``).
    max_steps : int, default -1
        Total optimizer steps; overrides ``num_train_epochs`` when positive.
    per_device_train_batch_size, per_device_eval_batch_size : int
        Pairs per process and micro-batch. Global batch =
        ``per_device_train_batch_size x n_processes x gradient_accumulation_steps``.
    gradient_accumulation_steps : int, default 1
        Micro-batches per optimizer step.
    learning_rate : float, default 1e-4
        Peak learning rate of AdamW.
    weight_decay : float, default 0.0
        Decoupled weight decay (AdamW); biases and normalisation weights are never decayed.
    warmup_ratio : float, default 0.0
        Fraction of the steps used for linear warmup (used when ``warmup_steps == 0``).
    warmup_steps : int, default 0
        Number of warmup steps (takes precedence over ``warmup_ratio``).
    lr_scheduler_type : {"linear", "cosine", "constant"}
        Decay after warmup.
    max_grad_norm : float or None, default 1.0
        Gradient clipping threshold (global L2 norm); ``None`` or 0 disables clipping.
    seed : int, default 42
        Seed of the global RNGs, the data order and the bootstrap counts.
    bf16 : bool or "auto", default "auto"
        bf16 autocast. ``"auto"``: on when CUDA with bf16 support is present, off otherwise.
    margin : str, float or None
        Bradley-Terry margin: a constant, or the name of a per-pair column of the dataset.
    bootstrap : bool, default False
        Per-member bootstrap resampling, implemented as per-pair per-member loss weights (see the
        module notes); all members share each batch.
    eval_steps : int or None
        Evaluate every ``eval_steps`` optimizer steps (and at the end) when an eval set is given;
        ``None`` evaluates at the end only.
    logging_steps : int, default 10
        Append the mean training loss to ``log_history`` every ``logging_steps`` steps.
    save_steps : int or None
        Write ``checkpoint-<step>/`` every ``save_steps`` steps; ``None`` writes none.
    save_total_limit : int or None
        Keep only the newest ``save_total_limit`` checkpoints.
    max_length : int, default 512
        Token limit of the default collator (and part of the feature-cache key). When the trainer
        builds the collator from the model, :meth:`RewardModelTrainer.train` records the length
        (capped at the backbone's positions) on ``model.config.max_length``, so that scoring the
        trained model truncates the same way; constructing a trainer leaves the model unchanged.
    disable_tqdm : bool, default False
        Hide the progress bar.
    dataloader_num_workers : int, default 0
        Worker processes of the data loaders.
    feature_cache_dir : str or None
        For models with a frozen trunk: folder where pooled trunk features are cached.
    ece_bins : int, default 15
        Bins of the pairwise ECE reported by :meth:`RewardModelTrainer.evaluate`.
    ddp_find_unused_parameters : bool or None
        Passed to DistributedDataParallel; ``None`` means True (backbones often hold parameters,
        such as BERT's pooler, that a reward head never uses).
    prior_precision : float, "unit" or None, default None
        Anchored ensembling (randomised priors): precision ``λ`` of a Gaussian prior on every
        reward-head parameter (:class:`auq.models.MemberHeads`), centred on the member's own
        initial draw. Adds ``λ/(2N)·mean_k ||θ_k − θ_k⁰||²`` (``N`` training pairs) to the training
        loss, so the prior's weight falls as data grows and the members' spread shrinks with
        ``N``; see ``anchor_init`` for how the anchors are drawn from the prior. Trained trunks
        and LoRA adapters are not anchored. ``"unit"`` (frozen trunks, features cached): ``λ`` is
        the mean squared norm of the training pairs' feature differences, so a typical training
        pair's prior margin is ``N(0, 1)``, as for a Laplace model's default prior; the value in
        use is :attr:`RewardModelTrainer.prior_precision`. ``None`` or 0: off.
        :data:`auq.training.HEADS_RECIPE` uses ``"unit"``. See :mod:`auq.training._spread`.
    anchor_init : {"prior", "model"}, default "prior"
        With ``prior_precision``: ``"prior"`` rescales the heads' initial weights (drawn with std
        ``1/sqrt(fan_in)`` by ``MemberHeads``) to std ``1/sqrt(prior_precision)`` when the trainer
        is built, so each member's anchor is a draw from the prior; ``"model"`` anchors the heads
        at their current values (e.g. a model that was already trained).
    early_stopping_patience : int or None, default None
        Stop after this many evaluations without improvement of ``metric_for_best_model``
        (``transformers.EarlyStoppingCallback``); needs an eval set (or ``eval_fraction``).
        Without ``eval_steps`` the trainer then evaluates once per epoch.
    early_stopping_threshold : float, default 0.0
        Minimum improvement that resets the patience.
    metric_for_best_model : str, default "eval_loss"
        Key of :meth:`RewardModelTrainer.evaluate` used for early stopping and the best model.
    greater_is_better : bool or None
        Direction of ``metric_for_best_model``; ``None``: False for ``*loss``/``*nll``/``*ece``
        metrics, True otherwise.
    load_best_model_at_end : bool, default False
        Restore the trainable parameters of the best evaluation at the end of training.
    eval_fraction : float, default 0.0
        When no ``eval_dataset`` is given, hold out this fraction of the training pairs (a
        seeded random slice; bootstrap counts and ``N`` refer to the rest) as the eval set.
    fit_uncertainty : bool, default True
        At the end of :meth:`RewardModelTrainer.train`, fit the model's feature density and
        training reward offsets on the training pairs (``model.density``,
        ``model.reward_offsets``; saved with the model). A frozen trunk reuses the cached
        features (no second trunk pass); otherwise one pass via ``model.fit_uncertainty``.

    Examples
    --------
    >>> cfg = RewardTrainerConfig(output_dir="out", max_steps=10, lr_scheduler_type="cosine")
    >>> RewardTrainerConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    output_dir: str = "auq-reward-model"
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    max_grad_norm: float | None = 1.0
    seed: int = 42
    bf16: bool | str = "auto"
    margin: str | float | None = None
    bootstrap: bool = False
    eval_steps: int | None = None
    logging_steps: int = 10
    save_steps: int | None = None
    save_total_limit: int | None = None
    max_length: int = 512
    disable_tqdm: bool = False
    dataloader_num_workers: int = 0
    feature_cache_dir: str | None = None
    ece_bins: int = 15
    ddp_find_unused_parameters: bool | None = None
    prior_precision: float | str | None = None
    anchor_init: str = "prior"
    early_stopping_patience: int | None = None
    early_stopping_threshold: float = 0.0
    metric_for_best_model: str = "eval_loss"
    greater_is_better: bool | None = None
    load_best_model_at_end: bool = False
    eval_fraction: float = 0.0
    fit_uncertainty: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir):
            raise TypeError(f"output_dir must be a non-empty path, got {self.output_dir!r}")
        self.output_dir = os.fspath(self.output_dir)
        check_float(self.num_train_epochs, "num_train_epochs", minimum=0.0, inclusive=(False, True))
        check_int(self.max_steps, "max_steps", minimum=-1)
        check_int(self.per_device_train_batch_size, "per_device_train_batch_size", minimum=1)
        check_int(self.per_device_eval_batch_size, "per_device_eval_batch_size", minimum=1)
        check_int(self.gradient_accumulation_steps, "gradient_accumulation_steps", minimum=1)
        check_float(self.learning_rate, "learning_rate", minimum=0.0, inclusive=(False, True))
        check_float(self.weight_decay, "weight_decay", minimum=0.0)
        check_float(self.warmup_ratio, "warmup_ratio", minimum=0.0, maximum=1.0)
        check_int(self.warmup_steps, "warmup_steps", minimum=0)
        check_choice(self.lr_scheduler_type, "lr_scheduler_type", _SCHEDULERS)
        if self.max_grad_norm is not None:
            check_float(self.max_grad_norm, "max_grad_norm", minimum=0.0)
        check_int(self.seed, "seed", minimum=0)
        check_choice(self.bf16, "bf16", (True, False, "auto"))
        if self.margin is not None and not isinstance(self.margin, str):
            self.margin = check_float(self.margin, "margin")
        if not isinstance(self.bootstrap, bool):
            raise TypeError(f"bootstrap must be a bool, got {type(self.bootstrap).__name__}")
        for name in ("eval_steps", "save_steps", "save_total_limit"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        check_int(self.logging_steps, "logging_steps", minimum=1)
        check_int(self.max_length, "max_length", minimum=2)
        check_int(self.dataloader_num_workers, "dataloader_num_workers", minimum=0)
        check_int(self.ece_bins, "ece_bins", minimum=1)
        check_choice(self.ddp_find_unused_parameters, "ddp_find_unused_parameters", (None, True, False))
        if self.feature_cache_dir is not None:
            self.feature_cache_dir = os.fspath(self.feature_cache_dir)
        if isinstance(self.prior_precision, str):
            if self.prior_precision != "unit":
                raise ValueError(f"prior_precision must be a number, 'unit' or None, got {self.prior_precision!r}")
        elif self.prior_precision is not None:
            self.prior_precision = check_float(self.prior_precision, "prior_precision", minimum=0.0)
        check_choice(self.anchor_init, "anchor_init", ("prior", "model"))
        if self.early_stopping_patience is not None:
            check_int(self.early_stopping_patience, "early_stopping_patience", minimum=1)
        self.early_stopping_threshold = check_float(
            self.early_stopping_threshold, "early_stopping_threshold", minimum=0.0
        )
        if not isinstance(self.metric_for_best_model, str) or not self.metric_for_best_model:
            raise TypeError(f"metric_for_best_model must be a metric name, got {self.metric_for_best_model!r}")
        check_choice(self.greater_is_better, "greater_is_better", (None, True, False))
        check_choice(self.load_best_model_at_end, "load_best_model_at_end", (True, False))
        self.eval_fraction = check_float(
            self.eval_fraction, "eval_fraction", minimum=0.0, maximum=1.0, inclusive=(True, False)
        )
        if not isinstance(self.fit_uncertainty, bool):
            raise TypeError(f"fit_uncertainty must be a bool, got {type(self.fit_uncertainty).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RewardTrainerConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        if not isinstance(d, Mapping):
            raise TypeError(f"d must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"d has unknown RewardTrainerConfig field(s) {unknown}")
        return cls(**dict(d))

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialise to JSON; also write it to ``path`` (atomically) when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            atomic_write_text(os.fspath(path), text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> RewardTrainerConfig:
        """Read a config from a JSON file path or a JSON string."""
        s = os.fspath(path_or_text)
        if os.path.isfile(s):
            with open(s, encoding="utf-8") as f:
                s = f.read()
        return cls.from_dict(json.loads(s))


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`RewardModelTrainer.train` returns.

    Attributes
    ----------
    global_step : int
        Optimizer steps done in total (including those before a resume).
    training_loss : float
        Mean training loss over the micro-batches of this call.
    metrics : dict
        Final evaluation metrics (empty without an eval set).
    log_history : tuple of dict
        Every logged entry (training loss, learning rate, evaluations).
    """

    global_step: int
    training_loss: float
    metrics: dict = field(default_factory=dict)
    log_history: tuple = ()

    def to_pandas(self):
        """Return ``log_history`` as a DataFrame (one row per logged entry)."""
        import pandas as pd

        return pd.DataFrame(list(self.log_history))



"""The reward trainer's settings (:class:`RewardTrainerConfig`) and what ``train()`` returns."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .._checks import check_choice, check_float, check_int
from ._args import TrainingArgumentsBase

__all__ = ["RewardTrainerConfig", "TrainResult"]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class RewardTrainerConfig(TrainingArgumentsBase):
    """Settings of :class:`RewardModelTrainer` (names follow TRL's ``RewardConfig``).

    The settings every trainer shares (length, batch, optimiser, schedule, logging, checkpoints,
    precision, ``report_to``) come from :class:`~auq.training._args.TrainingArgumentsBase`.

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
    fp16 : bool, default False
        fp16 mixed precision (exclusive with ``bf16=True``).
    report_to : str or list, default "none"
        Experiment trackers through Accelerate (``"tensorboard"``, ``"wandb"``, ``"all"``).
    logging_dir : str or None
        Tracker folder (default ``<output_dir>/runs``).
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
    bf16: bool | str = "auto"
    per_device_eval_batch_size: int = 16
    margin: str | float | None = None
    bootstrap: bool = False
    eval_steps: int | None = None
    max_length: int = 512
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
        super().__post_init__()
        check_int(self.per_device_eval_batch_size, "per_device_eval_batch_size", minimum=1)
        if self.margin is not None and not isinstance(self.margin, str):
            self.margin = check_float(self.margin, "margin")
        if not isinstance(self.bootstrap, bool):
            raise TypeError(f"bootstrap must be a bool, got {type(self.bootstrap).__name__}")
        if self.eval_steps is not None:
            check_int(self.eval_steps, "eval_steps", minimum=1)
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



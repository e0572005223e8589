"""Settings of :class:`~auq.training.UncertaintyDPOTrainer` (:class:`UncertaintyDPOConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._checks import check_choice, check_float, check_int
from ._args import MIXED_PRECISION_RENAME, PROGRESS_RENAME, TrainingArgumentsBase, renamed_fields

__all__ = ["UncertaintyDPOConfig"]


@renamed_fields({
    "num_epochs": ("num_train_epochs", None),
    "batch_size": ("per_device_train_batch_size", None),
    "mixed_precision": MIXED_PRECISION_RENAME,
    "progress": PROGRESS_RENAME,
    "normalize": ("weight_normalization", None),
})  # fmt: skip
@dataclass
class UncertaintyDPOConfig(TrainingArgumentsBase):
    """Configuration of :class:`UncertaintyDPOTrainer` (JSON-serialisable).

    The settings every trainer shares (``num_train_epochs``, ``max_steps``,
    ``per_device_train_batch_size``, ``learning_rate``, ``lr_scheduler_type``, warmup,
    ``save_steps``, ``bf16``/``fp16``, ``disable_tqdm``, ``report_to``, ...) are those of
    :class:`~auq.training._args.TrainingArgumentsBase`; here the defaults differ in
    ``output_dir="auq-dpo"``, ``learning_rate=5e-6``, ``lr_scheduler_type="constant"`` (no decay,
    as before the schedule existed) and ``seed=0``. Old names kept for one release (a
    ``FutureWarning``): ``num_epochs`` → ``num_train_epochs``, ``batch_size`` →
    ``per_device_train_batch_size``, ``mixed_precision`` → ``bf16``/``fp16``, ``progress`` →
    ``disable_tqdm`` (negated), ``normalize`` → ``weight_normalization``, ``max_steps=None`` → ``-1``.

    Attributes
    ----------
    loss_type : {"sigmoid", "robust", "ipo"}
        ``"sigmoid"``: :func:`~auq.training.losses.dpo_loss`; ``"robust"``:
        :func:`~auq.training.losses.robust_dpo_loss` with flip rate ``robust_epsilon``, or per pair
        ``min(q, 1 - q)`` of the soft target q (capped at ``robust_max_rate``) when
        ``robust_from_targets`` -- label-agnostic on purpose, see the trainer's loss; ``"ipo"``:
        :func:`~auq.training.losses.ipo_loss` with ``tau = beta``, length-normalised like TRL.
    use_weights, use_targets : bool
        Whether the dataset's per-pair weights / soft targets enter the loss. The targets are the
        dataset's own (human labels or vote shares) unless :func:`attach_uncertainty` was asked
        to replace them by the ensemble's probabilities (``use_targets=True`` there).
    weight_normalization : {"weights", "n"}
        Denominator of the weighted batch mean (Σw or number of pairs); the losses' argument of
        the same name.
    per_device_eval_batch_size : int or None
        Pairs per batch in :meth:`UncertaintyDPOTrainer.evaluate` and when precomputing the
        reference log-probs; ``None``: ``per_device_train_batch_size``.
    precompute_ref_logps : bool
        Compute the reference log-probs once before training (then the reference model is freed).
    disable_dropout : bool
        Set every dropout probability of policy and reference to 0 (TRL's default), so that the
        policy and reference log-probs agree at the start and the loss is deterministic.
    shuffle : bool
        Visit the pairs in a seeded random order per epoch (``seed``, epoch), else in order.

    Examples
    --------
    >>> cfg = UncertaintyDPOConfig(output_dir="dpo", beta=0.1, max_steps=100, warmup_ratio=0.1)
    >>> cfg.per_device_train_batch_size, cfg.lr_scheduler_type
    (8, 'constant')
    """

    output_dir: str = "auq-dpo"
    learning_rate: float = 5e-6
    lr_scheduler_type: str = "constant"
    seed: int = 0
    loss_type: str = "sigmoid"
    beta: float = 0.1
    per_device_eval_batch_size: int | None = None
    max_length: int = 512
    max_prompt_length: int | None = None
    use_weights: bool = True
    use_targets: bool = True
    weight_normalization: str = "weights"
    robust_epsilon: float = 0.1
    robust_from_targets: bool = False
    robust_max_rate: float = 0.45
    precompute_ref_logps: bool = False
    disable_dropout: bool = True
    shuffle: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.loss_type, "loss_type", ("sigmoid", "robust", "ipo"))
        check_float(self.beta, "beta", minimum=0.0, inclusive=(False, True))
        if self.per_device_eval_batch_size is not None:
            check_int(self.per_device_eval_batch_size, "per_device_eval_batch_size", minimum=1)
        check_int(self.max_length, "max_length", minimum=2)
        check_choice(self.weight_normalization, "weight_normalization", ("weights", "n"))
        check_float(self.robust_epsilon, "robust_epsilon", minimum=0.0, maximum=0.5, inclusive=(True, False))
        check_choice(self.shuffle, "shuffle", (True, False))

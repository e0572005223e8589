"""TRL integration: penalised GRPO rewards; per-pair weights / soft targets in TRL's ``DPOTrainer`` (deprecated).

Optional extra: ``pip install "auq[trl]"`` (tested range ``trl>=1.0,<1.17``; written and tested
against trl 1.16).

* :class:`WeightedDPOTrainer`, :class:`WeightedDPOConfig`, :class:`WeightedPreferenceCollator`
  (**deprecated**, removed in the next release; they emit a ``FutureWarning``): auq has one DPO
  implementation, :class:`auq.training.UncertaintyDPOTrainer`, which needs no TRL, takes the same
  per-pair weights and soft targets (dataset columns or :func:`auq.training.attach_uncertainty`)
  and is tested equal to TRL's ``DPOTrainer`` in loss value and gradient. What follows describes
  the deprecated subclass: a subclass of ``trl.DPOTrainer`` whose sigmoid DPO loss becomes
  :func:`auq.training.losses.dpo_loss` with per-pair ``weights`` and soft ``targets`` read from
  dataset columns (default ``"weight"`` and ``"target"``). TRL has no hook for per-example loss
  terms and drops unknown columns, so three things are overridden: the columns are kept through
  ``remove_unused_columns`` (:meth:`WeightedDPOTrainer._set_signature_columns_if_needed`), the
  collator (:class:`WeightedPreferenceCollator`, a subclass of TRL's ``DataCollatorForPreference``)
  carries them into the batch as float tensors ``weights``/``targets``, and the loss
  (:meth:`WeightedDPOTrainer._compute_loss`) computes the sequence log-probabilities the way TRL
  does and hands them to ``dpo_loss``. With all weights and targets 1 the loss equals stock TRL's
  ``loss_type="sigmoid"`` (tested).
* :func:`uncertainty_penalized_reward_func` -- a reward function for TRL's ``GRPOTrainer``
  (``reward_funcs=[...]``) that scores prompt + completion with an auq reward ensemble and returns
  :func:`auq.training.losses.penalized_reward` (e.g. ``mean - coef * std``), logging the members'
  std through TRL's ``log_metric`` hook.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

try:
    import trl
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference
except ImportError as exc:  # pragma: no cover - exercised only without trl
    raise ImportError(
        "auq.integrations.trl needs TRL. Install it with `pip install \"auq[trl]\"` "
        "(tested with trl>=1.0,<1.17)."
    ) from exc

from auq._checks import as_float_array, check_choice, check_float, check_int
from auq.training.losses import dpo_loss, penalized_reward

logger = logging.getLogger(__name__)

__all__ = [
    "TESTED_TRL_RANGE",
    "WeightedDPOConfig",
    "WeightedPreferenceCollator",
    "WeightedDPOTrainer",
    "UncertaintyPenalizedReward",
    "uncertainty_penalized_reward_func",
]

TESTED_TRL_RANGE = (">=1.0", "<1.17")


def _check_trl_version() -> None:
    from packaging.version import Version

    v = Version(trl.__version__)
    if not (Version("1.0") <= v < Version("1.17")):
        logger.warning(
            "auq.integrations.trl is tested with trl>=1.0,<1.17; found trl %s. "
            "WeightedDPOTrainer re-implements part of DPOTrainer._compute_loss and may not match it.",
            trl.__version__,
        )


_check_trl_version()

# keys the weighted collator adds to a batch (never passed to the model)
_EXTRA_KEYS = ("weights", "targets")
_MISSING = object()


def _deprecated(name: str, replacement: str) -> None:
    warnings.warn(
        f"auq.integrations.trl.{name} is deprecated and will be removed in the next release; use "
        f"auq.training.{replacement} (one DPO implementation: the same weighted / soft-target loss, "
        "tested equal to TRL's DPOTrainer, no TRL needed)",
        FutureWarning,
        stacklevel=3,
    )


# ------------------------------------------------------------------------------------------
# DPO
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class WeightedDPOConfig(DPOConfig):
    """``trl.DPOConfig`` plus the columns holding per-pair weights and soft targets.

    Parameters
    ----------
    weight_column : str or None, default "weight"
        Dataset column of non-negative per-pair weights (None: all 1). A column missing from the
        dataset counts as all 1 when it has the default name and is an error otherwise.
    target_column : str or None, default "target"
        Dataset column of soft labels ``q = P(chosen preferred)`` in [0, 1] (None: all 1).
    weight_normalize : {"weights", "n"}, default "weights"
        Denominator of the weighted mean in each batch: ``Σw`` (a weighted average) or the number
        of pairs (see :func:`auq.training.losses.dpo_loss`). Normalisation is per device batch.

    Examples
    --------
    >>> cfg = WeightedDPOConfig(output_dir="out", weight_column="w", report_to="none")  # doctest: +SKIP

    .. deprecated::
        Use :class:`auq.training.UncertaintyDPOConfig`; removed in the next release.
    """

    weight_column: str | None = dataclasses.field(
        default="weight", metadata={"help": "Dataset column with per-pair weights (None: unit weights)."}
    )
    target_column: str | None = dataclasses.field(
        default="target", metadata={"help": "Dataset column with soft targets in [0, 1] (None: 1)."}
    )
    weight_normalize: str = dataclasses.field(
        default="weights", metadata={"help": "Weighted mean denominator: 'weights' (sum of w) or 'n'."}
    )

    def __post_init__(self) -> None:
        _deprecated("WeightedDPOConfig", "UncertaintyDPOConfig")
        super().__post_init__()


@dataclasses.dataclass
class WeightedPreferenceCollator(DataCollatorForPreference):
    """TRL's ``DataCollatorForPreference`` that also carries per-pair weight and target columns.

    The batch gets ``weights`` and ``targets`` (float32 ``[B]``; 1.0 when the column is None or
    absent from the examples) next to TRL's ``input_ids``/``attention_mask``/``completion_mask``.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", FutureWarning)  # deprecated
    ...     c = WeightedPreferenceCollator(pad_token_id=0)
    >>> b = c([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3], "weight": 0.5, "target": 0.9}])
    >>> b["weights"].tolist(), round(b["targets"].item(), 3)
    ([0.5], 0.9)
    """

    weight_column: str | None = "weight"
    target_column: str | None = "target"

    def __post_init__(self) -> None:
        _deprecated("WeightedPreferenceCollator", "UncertaintyDPOTrainer (its CausalLMPreferenceCollator)")

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        for key, column in (("weights", self.weight_column), ("targets", self.target_column)):
            values = [1.0 if column is None else ex.get(column, 1.0) for ex in examples]
            output[key] = torch.tensor([float(v) for v in values], dtype=torch.float32)
        return output


def _check_column(dataset: Any, column: str | None, name: str, default: str, kind: str) -> str | None:
    """Validate a weight/target column of a map-style dataset; return the column to use or None."""
    if column is None:
        return None
    if not isinstance(column, str):
        raise TypeError(f"{name} must be a column name (str) or None, got {type(column).__name__}")
    names = getattr(dataset, "column_names", None)
    if names is None:  # IterableDataset without known features: checked batch by batch in the loss
        return column
    if column not in names:
        if column == default:
            logger.info("no %r column in the dataset; using %s of 1", column, kind)
            return None
        raise ValueError(f"{name}={column!r} is not a column of the dataset; columns: {sorted(names)}")
    values = as_float_array(np.asarray(dataset[column], dtype=np.float64), f"dataset column {column!r}", ndim=1)
    if kind == "weights":
        if (values < 0).any():
            raise ValueError(f"{name} column {column!r} must be non-negative, got {float(values.min())!r}")
    elif values.size and (values.min() < 0 or values.max() > 1):
        bad = values.min() if values.min() < 0 else values.max()
        raise ValueError(f"{name} column {column!r} must hold targets in [0, 1], got {float(bad)!r}")
    return column


class WeightedDPOTrainer(DPOTrainer):
    """``trl.DPOTrainer`` with per-pair weights and soft targets taken from dataset columns (deprecated).

    .. deprecated::
        Use :class:`auq.training.UncertaintyDPOTrainer` (the same loss, no TRL needed, tested
        equal to TRL's values and gradients); this subclass is removed in the next release.

    The per-pair loss is ``w · [-q·logsigmoid(z) - (1-q)·logsigmoid(-z)]`` with
    ``z = β[(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))]``, averaged over the batch by
    ``Σw`` (or by ``n`` with ``weight_normalize="n"``): :func:`auq.training.losses.dpo_loss`. With
    ``w ≡ 1`` and ``q ≡ 1`` it equals stock TRL's ``loss_type="sigmoid"`` in value and gradient.

    Everything else (tokenisation, reference model / PEFT adapter / precomputed reference
    log-probs, optimisation, checkpointing) is TRL's. Supported: ``loss_type=["sigmoid"]``,
    ``f_divergence_type="reverse_kl"``, ``ld_alpha=None``, ``use_weighting=False``, text datasets
    (not vision). Logged besides TRL's reward metrics: ``weights/mean`` and ``targets/mean``
    (TRL's entropy/token-accuracy metrics are not computed).

    Parameters
    ----------
    *args, **kwargs
        As for ``trl.DPOTrainer`` (``model``, ``ref_model``, ``args``, ``train_dataset``, ...).
    weight_column, target_column, weight_normalize : optional
        Override the fields of :class:`WeightedDPOConfig` (or give them with a plain
        ``DPOConfig``). Defaults: ``"weight"``, ``"target"``, ``"weights"``.

    Examples
    --------
    >>> ds = Dataset.from_dict({"prompt": [...], "chosen": [...], "rejected": [...],
    ...                         "weight": [...], "target": [...]})  # doctest: +SKIP
    >>> trainer = WeightedDPOTrainer(model, args=DPOConfig("out", report_to="none"),
    ...                              train_dataset=ds, processing_class=tok)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        *args: Any,
        weight_column: Any = _MISSING,
        target_column: Any = _MISSING,
        weight_normalize: Any = _MISSING,
        **kwargs: Any,
    ) -> None:
        _deprecated("WeightedDPOTrainer", "UncertaintyDPOTrainer")
        targs = kwargs.get("args", args[2] if len(args) > 2 else None)
        train_dataset = kwargs.get("train_dataset", args[4] if len(args) > 4 else None)

        def pick(value: Any, field: str, default: Any) -> Any:
            if value is not _MISSING:
                return value
            return getattr(targs, field, default)

        weight_column = pick(weight_column, "weight_column", "weight")
        target_column = pick(target_column, "target_column", "target")
        self.weight_normalize = check_choice(
            pick(weight_normalize, "weight_normalize", "weights"), "weight_normalize", ("weights", "n")
        )
        if targs is not None:
            self._check_supported(targs)
        self.weight_column = _check_column(train_dataset, weight_column, "weight_column", "weight", "weights")
        self.target_column = _check_column(train_dataset, target_column, "target_column", "target", "targets")
        if train_dataset is not None and (self.weight_column or self.target_column):
            names = getattr(train_dataset, "column_names", None) or []
            if "image" in names or "images" in names:
                raise ValueError("WeightedDPOTrainer supports text datasets only (found an image column)")

        user_collator = kwargs.get("data_collator", args[3] if len(args) > 3 else None)
        if user_collator is not None and not isinstance(user_collator, WeightedPreferenceCollator):
            raise TypeError(
                "data_collator must be a WeightedPreferenceCollator (or None for the default), got "
                f"{type(user_collator).__name__}; subclass WeightedPreferenceCollator to customise it"
            )
        super().__init__(*args, **kwargs)
        self._check_supported(self.args)
        if user_collator is None:
            # Upgrade the collator TRL built (its padding / truncation settings kept). Reference
            # log-probs, when precomputed in __init__, were computed with TRL's own collator.
            base = self.data_collator
            fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(DataCollatorForPreference)}
            with warnings.catch_warnings():  # the trainer's own deprecation warning was given
                warnings.simplefilter("ignore", FutureWarning)
                self.data_collator = WeightedPreferenceCollator(
                    **fields, weight_column=self.weight_column, target_column=self.target_column
                )
        else:
            user_collator.weight_column = self.weight_column
            user_collator.target_column = self.target_column

    @staticmethod
    def _check_supported(args: Any) -> None:
        loss_type = list(getattr(args, "loss_type", ["sigmoid"]))
        if loss_type != ["sigmoid"]:
            raise ValueError(f"WeightedDPOTrainer supports loss_type=['sigmoid'] only, got loss_type={loss_type}")
        if getattr(args, "f_divergence_type", "reverse_kl") != "reverse_kl":
            raise ValueError(
                f"WeightedDPOTrainer supports f_divergence_type='reverse_kl' only, got {args.f_divergence_type!r}"
            )
        if getattr(args, "ld_alpha", None) is not None:
            raise ValueError(f"WeightedDPOTrainer does not support ld_alpha, got ld_alpha={args.ld_alpha!r}")
        if getattr(args, "use_weighting", False):
            raise ValueError("WeightedDPOTrainer does not support use_weighting=True (WPO); pass weights as a column")

    # -- keep the columns --------------------------------------------------------------------
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        for column in (self.weight_column, self.target_column):
            if column is not None and column not in self._signature_columns:
                self._signature_columns.append(column)

    # -- reference log-probs: never hand our extra keys to the model ---------------------------
    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k not in _EXTRA_KEYS})

    # -- the loss ------------------------------------------------------------------------------
    def _sequence_logps(self, model: Any, model_kwargs: dict[str, Any], inputs: dict[str, Any]) -> tuple[Any, Any]:
        """Summed completion log-probs of the policy, as in trl 1.16 ``DPOTrainer._compute_loss``
        (trl/trainer/dpo_trainer.py, the lines from ``labels = inputs["input_ids"].masked_fill``
        to ``logps = per_token_logps.sum(dim=1)``, ``ld_alpha=None`` branch)."""
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
        return logps, outputs

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        non_model = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", *_EXTRA_KEYS}
        model_kwargs = {k: v for k, v in inputs.items() if k not in non_model}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        logps, outputs = self._sequence_logps(model, model_kwargs, inputs)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)  # batch is [chosen, rejected]

        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:  # TRL's own helper: reference model, or the PEFT base / "ref" adapter
            ref_model = self.ref_model if self.ref_model is not None else self.model
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(ref_model, inputs)

        n = chosen_logps.shape[0]
        weights = inputs.get("weights")
        targets = inputs.get("targets")
        weights = torch.ones(n, device=logps.device) if weights is None else weights
        targets = torch.ones(n, device=logps.device) if targets is None else targets
        loss = dpo_loss(
            chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=self.beta,
            weights=weights.to(logps.dtype), targets=targets.to(logps.dtype), reduction="mean",
            weight_normalization=self.weight_normalize,
        ) * self.loss_weights[0]
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        # metrics (TRL's names for the reward metrics)
        gather = self.accelerator.gather
        chosen_rewards = self.beta * (chosen_logps - ref_chosen_logps).detach()
        rejected_rewards = self.beta * (rejected_logps - ref_rejected_logps).detach()
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        metrics["weights/mean"].append(gather(weights.detach().float()).mean().item())
        metrics["targets/mean"].append(gather(targets.detach().float()).mean().item())

        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss


# ------------------------------------------------------------------------------------------
# GRPO reward functions
# ------------------------------------------------------------------------------------------


class UncertaintyPenalizedReward:
    """A TRL reward function: penalised reward-ensemble scores of prompt + completion.

    Built by :func:`uncertainty_penalized_reward_func`; see there. Called by TRL's ``GRPOTrainer``
    as ``f(prompts=..., completions=..., completion_ids=..., **dataset_columns, trainer_state=...,
    log_extra=..., log_metric=...)`` and returns one float per completion.

    Attributes
    ----------
    __name__ : str
        The name TRL logs the reward under (``rewards/<name>/mean``).
    last_std, last_mean, last_rewards : numpy arrays or None
        Per-completion member std, member mean and returned reward of the last call.
    last_member_rewards : numpy array ``[n, K]`` or None
        Raw member rewards of the last call.
    last_features : numpy array ``[n, H]`` or None
        Pooled features of the last call's texts, from the same trunk pass, when
        ``collect_features`` is True (set by :class:`auq.monitor.RewardHackingCallback`).
    observers : list of callables
        Each is called as ``observer(self, prompts, completions, kwargs)`` after every call
        (``kwargs``: TRL's keyword arguments, e.g. ``log_metric``); how the reward-hacking
        monitor sees the scored completions without scoring them again.
    """

    def __init__(
        self,
        ensemble: Any,
        *,
        method: str = "lcb",
        coef: float = 1.0,
        tokenizer: Any = None,
        batch_size: int = 32,
        max_length: int | None = None,
        center: bool = True,
        member_offsets: Any = None,
        device: Any = None,
        name: str | None = None,
    ) -> None:
        from auq.models._completions import completion_collator

        if not isinstance(ensemble, torch.nn.Module) or not callable(ensemble):
            raise TypeError(f"ensemble must be an auq reward model (nn.Module), got {type(ensemble).__name__}")
        self.ensemble = ensemble
        self.method = check_choice(method, "method", ("mean", "lcb", "wco", "uwo"))
        self.coef = check_float(coef, "coef", minimum=0.0)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.center = bool(center)
        self.member_offsets = member_offsets
        tokenizer = tokenizer if tokenizer is not None else getattr(ensemble, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("tokenizer is required when the ensemble has no tokenizer attribute")
        self.tokenizer = tokenizer
        self._collator = completion_collator(ensemble, tokenizer, max_length)
        self.device = device
        self.__name__ = name or f"auq_{self.method}"
        self.last_std: np.ndarray | None = None
        self.last_mean: np.ndarray | None = None
        self.last_rewards: np.ndarray | None = None
        self.last_member_rewards: np.ndarray | None = None
        self.last_features: np.ndarray | None = None
        self.collect_features = False
        self.observers: list[Callable[..., None]] = []

    def __repr__(self) -> str:
        return f"UncertaintyPenalizedReward(method={self.method!r}, coef={self.coef}, name={self.__name__!r})"

    def member_rewards(self, prompts: Sequence[Any], completions: Sequence[Any]) -> np.ndarray:
        """Member rewards ``[n, K]`` (float64) of each ``prompt + completion`` (text or messages)."""
        return self._score(prompts, completions, features=False)[0]

    def _score(self, prompts: Sequence[Any], completions: Sequence[Any], features: bool) -> tuple[np.ndarray, Any]:
        """Member rewards and (``features``) pooled features ``[n, H]`` from one trunk pass."""
        from auq.models._completions import score_completions

        model = self.ensemble
        device = self.device if self.device is not None else next(model.parameters()).device
        return score_completions(
            model, self._collator, prompts, completions, batch_size=self.batch_size, device=device, features=features
        )

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        from auq.estimators import response_reward_stats

        r, self.last_features = self._score(prompts, completions, features=self.collect_features)
        self.last_member_rewards = r
        offsets = self.member_offsets
        if offsets is None:  # the reward model's training offsets (saved with it), when it has them
            offsets = getattr(self.ensemble, "reward_offsets", None)
        if offsets is None and self.center and r.shape[0] < 2:
            raise ValueError(
                "centring each member over the completions of a call needs at least 2 completions; "
                "pass member_offsets (members' mean rewards on a reference set) or center=False"
            )
        rewards = penalized_reward(r, self.method, coef=self.coef, center=self.center, member_offsets=offsets)
        shifted = r if offsets is None else r - np.asarray(offsets, dtype=np.float64)
        stats = response_reward_stats(shifted, center=self.center and offsets is None)
        self.last_mean, self.last_std = np.asarray(stats.mean), np.asarray(stats.std)
        self.last_rewards = np.asarray(rewards, dtype=np.float64)
        mean_std = float(self.last_std.mean())
        logger.info("%s: mean reward %.4f, mean member std %.4f over %d completions",
                    self.__name__, float(self.last_rewards.mean()), mean_std, len(self.last_rewards))
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if log_metric is not None:  # TRL >= 1.x GRPOTrainer hook: averaged per logging step
            log_metric(f"{self.__name__}/member_std", mean_std)
            log_metric(f"{self.__name__}/member_mean", float(self.last_mean.mean()))
        log_extra: Callable[[str, list], None] | None = kwargs.get("log_extra")
        if log_extra is not None:  # per-completion column of the completions table
            log_extra(f"{self.__name__}_std", self.last_std.tolist())
        for observer in self.observers:  # e.g. auq.monitor.RewardHackingCallback
            observer(self, prompts, completions, kwargs)
        return [float(x) for x in self.last_rewards]


def uncertainty_penalized_reward_func(
    ensemble: Any,
    *,
    method: str = "lcb",
    coef: float = 1.0,
    tokenizer: Any = None,
    batch_size: int = 32,
    max_length: int | None = None,
    center: bool = True,
    member_offsets: Any = None,
    device: Any = None,
    name: str | None = None,
) -> UncertaintyPenalizedReward:
    """A reward function for TRL's ``GRPOTrainer``: penalised scores of a reward ensemble.

    Each ``prompt + completion`` (plain text, or message lists rendered with the tokenizer's chat
    template, exactly as :class:`auq.data.PreferenceCollator` renders training pairs) is scored by
    the ensemble (``[n, K]`` member rewards) and turned into one reward per completion by
    :func:`auq.training.losses.penalized_reward`: ``"lcb"`` = ``mean - coef·std``, ``"wco"`` =
    ``min`` over members, ``"uwo"`` = ``mean - coef·var``, ``"mean"``. Members are centred by
    ``member_offsets`` (their mean rewards on a reference set), by default the ensemble's own
    training offsets (``ensemble.reward_offsets``, fitted at the end of training and saved with
    it) -- so the logged mean member reward can drift as the policy moves -- or, for a model
    without them, over the completions of each call (``center=True``; TRL calls once per
    generation batch: the logged member mean is then 0 by construction).

    The per-completion member std is kept on the function (``fn.last_std``), logged with
    ``logging`` and, inside ``GRPOTrainer``, reported through its ``log_metric`` hook as
    ``<name>/member_std`` (and as a column of the completions table through ``log_extra``).

    Parameters
    ----------
    ensemble : auq reward model
        ``forward(input_ids, attention_mask) -> [B, K]`` (e.g. :class:`auq.models.RewardEnsemble`).
    method : {"lcb", "wco", "uwo", "mean"}
    coef : float, default 1.0
        Penalty ``λ >= 0``.
    tokenizer : transformers tokenizer, optional
        Default: ``ensemble.tokenizer``.
    batch_size : int, default 32
        Completions per ensemble forward.
    max_length : int, optional
        Tokens per text (the prompt is cut from the left first). Default: the length the ensemble
        was trained with (else 512); always capped at the backbone's ``ensemble.max_positions``.
    center, member_offsets
        Centring of each member, see :func:`auq.training.losses.penalized_reward`;
        ``member_offsets=None`` uses ``ensemble.reward_offsets`` when the ensemble has them.
    device : optional
        Where to run the ensemble (default: where its parameters are).
    name : str, optional
        ``__name__`` of the function (TRL's metric name); default ``"auq_<method>"``.

    Returns
    -------
    UncertaintyPenalizedReward
        Callable ``(prompts, completions, **kwargs) -> list[float]``.

    Examples
    --------
    >>> fn = uncertainty_penalized_reward_func(ensemble, method="lcb", coef=0.5)  # doctest: +SKIP
    >>> trainer = GRPOTrainer(model=policy, reward_funcs=[fn], args=cfg, train_dataset=ds)  # doctest: +SKIP
    >>> fn(prompts=["Hi"] * 2, completions=["Hello!", "Go away."])  # doctest: +SKIP
    [0.31, -0.52]
    """
    return UncertaintyPenalizedReward(
        ensemble, method=method, coef=coef, tokenizer=tokenizer, batch_size=batch_size,
        max_length=max_length, center=center, member_offsets=member_offsets, device=device, name=name,
    )

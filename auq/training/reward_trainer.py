"""Reward-model trainer on Hugging Face Accelerate.

:class:`RewardModelTrainer` fits any auq reward model (an ``nn.Module`` whose
``forward(input_ids, attention_mask)`` returns member rewards ``[batch, n_members]``) to preference
pairs with the Bradley-Terry loss of :func:`auq.training.losses.bradley_terry_loss`. It runs
unchanged on one CPU, one GPU, or data-parallel on several processes through
``accelerate launch``: the global batch is ``per_device_train_batch_size x n_processes x
gradient_accumulation_steps``.

Design notes
------------
* **One batch for all members.** Every member sees the same mini-batch; ensemble diversity from
  bootstrap resampling is obtained by per-member *bootstrap counts*: before training, member ``k``
  draws ``n`` pairs with replacement from the ``n`` training pairs (a multinomial draw; Poisson(1)
  counts are its large-``n`` limit), and pair ``i``'s loss for member ``k`` is weighted by how often
  it was drawn (0, 1, 2, ...). Training on these weighted pairs is exactly training member ``k`` on
  its bootstrap resample, but all members share one forward pass (and, for ``heads``, one trunk).
  The counts are indexed by the pair's position in the training dataset, so they do not depend on
  the number of processes or the batch size.
* **Loss normalisation.** Per micro-batch the loss is ``Σ_b w_bk·ℓ_bk`` per member (``w`` = pair
  weight x bootstrap count), averaged over members and divided by the number of pairs ``B`` in
  the micro-batch (not by ``Σw``). The normaliser is then the same on every process, so the
  data-parallel average of the gradients equals the one-process gradient of the global batch
  exactly; since bootstrap counts average 1, the scale matches the unweighted mean.
* **Data parallel.** ``accelerate launch --multi_gpu --num_processes N your_script.py`` (or
  ``-m auq.cli train ...``) runs the same code on N processes; accelerate's seedable sampler
  gives every process the same permutation and each takes its share of each global batch, so N
  processes x batch b equal one process x batch N·b. On a machine without CUDA the trainer asks
  accelerate for its CPU (gloo) process group when ``WORLD_SIZE > 1``. (In accelerate 1.15
  ``accelerate launch --cpu --num_processes N`` starts a *single* process unless an MPI hostfile
  is given; use ``--multi_gpu`` as above.) Keep ``len(dataset)`` a multiple of the global batch
  for bit-comparable runs: accelerate completes a short last batch with pairs from the start.
* **Frozen trunk, cached features.** When the model reports ``trunk_frozen`` (shared-trunk heads
  with a frozen backbone), the trunk's pooled features are computed once and the heads train on
  them. With ``feature_cache_dir`` they are stored per text in an :class:`auq.models.FeatureCache`,
  keyed by the trunk's weights, the tokenizer, ``max_length``, the pooling and the text: other
  seeds, member counts, kinds and data subsets on the same trunk cost no trunk pass.
* **Checkpoints without pickle.** ``checkpoint-<step>/`` holds the model (``model/``, through the
  model's own ``save_pretrained``), the optimizer state (tensors in safetensors, structure in JSON),
  the scheduler state (JSON), every process's RNG states (safetensors + JSON) and the trainer state
  (step, epoch, batches seen in the epoch, log history). It is written to a temporary folder and
  renamed into place, so an interrupted save never leaves a half-written checkpoint.
* **Exact resume.** The data order is a function of ``(seed, epoch)`` only (accelerate's seedable
  sampler), the data loader never draws from the global RNG, and the RNG states are restored, so
  resuming from a mid-epoch checkpoint (the batches already seen are skipped) reproduces the
  uninterrupted run exactly on CPU.

Examples
--------
>>> from auq.models import RewardEnsemble                       # doctest: +SKIP
>>> from auq.data import load_hh_rlhf                           # doctest: +SKIP
>>> model = RewardEnsemble.from_backbone("sentence-transformers/all-MiniLM-L6-v2",
...                                      kind="heads", n_members=8)  # doctest: +SKIP
>>> train, test = load_hh_rlhf().train_test_split(test_size=0.2, seed=0)  # doctest: +SKIP
>>> config = RewardTrainerConfig(output_dir="rm", num_train_epochs=2, bootstrap=True)
>>> trainer = RewardModelTrainer(model, config, train, eval_dataset=test)  # doctest: +SKIP
>>> trainer.train()                                              # doctest: +SKIP
>>> trainer.evaluate()["eval_accuracy"]                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .._checks import check_choice, check_float, check_int
from .._io import atomic_write_text, save_safetensors
from ..models._features import FeatureCache
from ._spread import (
    EarlyStoppingState,
    anchor_penalty,
    draw_anchors_from_prior,
    head_parameters,
    split_eval_slice,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RewardTrainerConfig",
    "RewardModelTrainer",
    "TrainResult",
    "bootstrap_counts",
    "load_checkpoint_state",
]

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_FORMAT_VERSION = 1
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
        Token limit of the default collator (and part of the feature-cache key).
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
    prior_precision : float or None, default None
        Anchored ensembling (randomised priors): precision ``λ`` of a Gaussian prior on every
        reward-head parameter (:class:`auq.models.MemberHeads`), centred on the member's own
        initial draw. Adds ``λ/(2N)·mean_k ||θ_k − θ_k⁰||²`` (``N`` training pairs) to the training
        loss, so the prior's weight falls as data grows and the members' spread shrinks with
        ``N``; see ``anchor_init`` for how the anchors are drawn from the prior. Trained trunks
        and LoRA adapters are not anchored. ``None`` or 0: off. :data:`auq.training.HEADS_RECIPE`
        uses 30. See :mod:`auq.training._spread`.
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
    prior_precision: float | None = None
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
        if self.prior_precision is not None:
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


# --------------------------------------------------------------------------------------------
# Small helpers (bootstrap counts, fingerprints, atomic files, RNG, optimizer state)
# --------------------------------------------------------------------------------------------


def bootstrap_counts(n_pairs: int, n_members: int, seed: int) -> np.ndarray:
    """Per-member bootstrap counts of ``n_pairs`` training pairs.

    Member ``k`` draws ``n_pairs`` pairs with replacement; ``counts[i, k]`` is how often pair ``i``
    was drawn (a multinomial draw with equal probabilities, so each column sums to ``n_pairs``).
    Used as per-pair, per-member loss weights, it turns one shared batch into ``n_members``
    bootstrap resamples.

    Parameters
    ----------
    n_pairs, n_members : int
        Size of the training set and number of members.
    seed : int
        Seed; the counts depend only on ``(n_pairs, n_members, seed)``.

    Returns
    -------
    numpy.ndarray
        float32 array ``[n_pairs, n_members]``.

    Examples
    --------
    >>> c = bootstrap_counts(5, 3, seed=0)
    >>> c.shape, c.sum(axis=0).tolist()
    ((5, 3), [5.0, 5.0, 5.0])
    """
    n_pairs = check_int(n_pairs, "n_pairs", minimum=1)
    n_members = check_int(n_members, "n_members", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB0075]))
    counts = rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs), size=n_members)
    return np.ascontiguousarray(counts.T, dtype=np.float32)


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jsonable(x: Any) -> Any:
    """Convert tuples/NumPy scalars to JSON types (raise TypeError for anything else)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"cannot store a value of type {type(x).__name__} in a JSON checkpoint file")


def _get_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global RNG is what we save)
    version, py_state, gauss = random.getstate()
    meta = {
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])},
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss},
    }
    return tensors, meta


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in sorted(cuda, key=lambda k: int(k.rsplit("_", 1)[1]))]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    npm = meta["numpy"]
    np.random.set_state(  # noqa: NPY002 (restoring the global RNG)
        {
            "bit_generator": npm["bit_generator"],
            "state": {"key": np.asarray(npm["state"]["key"], dtype=np.uint32), "pos": npm["state"]["pos"]},
            "has_gauss": npm["has_gauss"],
            "gauss": npm["gauss"],
        }
    )
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))


def _optimizer_state_to_files(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into safetensors-ready tensors and a JSON structure."""
    tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for pid, entry in state_dict["state"].items():
        meta_entry: dict[str, Any] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tkey = f"state.{pid}.{key}"
                tensors[tkey] = value.detach().to("cpu").clone().contiguous()
                meta_entry[key] = {"tensor": tkey}
            else:
                meta_entry[key] = {"value": _jsonable(value)}
        state_meta[str(pid)] = meta_entry
    groups = []
    for g in state_dict["param_groups"]:
        g2 = {}
        tuple_keys = []
        for k, v in g.items():
            if isinstance(v, tuple):
                tuple_keys.append(k)
            g2[k] = _jsonable(v)
        g2["__tuple_keys__"] = tuple_keys
        groups.append(g2)
    return tensors, {"state": state_meta, "param_groups": groups}


def _optimizer_state_from_files(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {
            k: (tensors[v["tensor"]] if "tensor" in v else v["value"]) for k, v in entry.items()
        }
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        for k in g.pop("__tuple_keys__", []):
            g[k] = tuple(g[k])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _checkpoint_step(path: str) -> int | None:
    m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else None


def _list_checkpoints(output_dir: str) -> list[str]:
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = _checkpoint_step(name)
        full = os.path.join(output_dir, name)
        if step is not None and os.path.isdir(full):
            found.append((step, full))
    return [p for _, p in sorted(found)]


_REQUIRED_CHECKPOINT_FILES = (
    "trainer_state.json",
    "optimizer.safetensors",
    "optimizer.json",
    "scheduler.json",
    "model",
)


def load_checkpoint_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``trainer_state.json`` of a checkpoint folder.

    Raises ``ValueError`` naming the missing file when the folder is incomplete.

    Examples
    --------
    >>> load_checkpoint_state("out/checkpoint-10")["global_step"]  # doctest: +SKIP
    10
    """
    path = os.fspath(checkpoint_dir)
    if not os.path.isdir(path):
        raise ValueError(f"resume_from_checkpoint: {path!r} is not a checkpoint folder")
    for name in _REQUIRED_CHECKPOINT_FILES:
        if not os.path.exists(os.path.join(path, name)):
            raise ValueError(
                f"resume_from_checkpoint: checkpoint {path!r} is incomplete, {name!r} is missing"
            )
    state = _read_json(os.path.join(path, "trainer_state.json"))
    for key in ("global_step", "epoch", "batches_in_epoch"):
        if key not in state:
            raise ValueError(
                f"resume_from_checkpoint: {path!r}/trainer_state.json lacks the field {key!r}"
            )
    return state


# --------------------------------------------------------------------------------------------
# Datasets and collation
# --------------------------------------------------------------------------------------------


class _IndexedDataset(torch.utils.data.Dataset):
    """Adds ``index`` (position in the dataset) and, optionally, a margin column to each example."""

    def __init__(self, dataset: Any, margin_column: str | None = None):
        self.dataset = dataset
        self.margin_column = margin_column
        self._margin_values = None
        if margin_column is not None and len(dataset) > 0:
            first = dataset[0]
            if not (isinstance(first, Mapping) and margin_column in first):
                values = getattr(dataset, margin_column, None)
                if values is None:
                    raise ValueError(
                        f"margin: the dataset has no column {margin_column!r} "
                        "(neither in its examples nor as an attribute)"
                    )
                self._margin_values = np.asarray(values, dtype=np.float64)
                if len(self._margin_values) != len(dataset):
                    raise ValueError(
                        f"margin: column {margin_column!r} has {len(self._margin_values)} values "
                        f"for {len(dataset)} pairs"
                    )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.dataset[i]
        if not isinstance(ex, Mapping):
            raise TypeError(f"dataset[{i}] must be a dict-like example, got {type(ex).__name__}")
        ex = dict(ex)
        ex["index"] = i  # the position: bootstrap counts and predict() order by it, whatever the data carry
        if self.margin_column is not None:
            if self._margin_values is not None:
                ex["__margin__"] = float(self._margin_values[i])
            else:
                ex["__margin__"] = float(ex[self.margin_column])
        return ex


class _CollateWithExtras:
    """Wraps a pair collator so batches always carry ``index``, ``targets``, ``weights`` (and margin)."""

    def __init__(self, collator: Callable[[list], dict]):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        margins = [ex.pop("__margin__") for ex in examples] if "__margin__" in examples[0] else None
        batch = dict(self.collator(examples))
        n = len(examples)
        if "index" not in batch:
            batch["index"] = torch.tensor([int(ex["index"]) for ex in examples], dtype=torch.long)
        if "targets" not in batch:
            batch["targets"] = torch.ones(n, dtype=torch.float32)
        if "weights" not in batch:
            batch["weights"] = torch.ones(n, dtype=torch.float32)
        if margins is not None:
            batch["margin"] = torch.tensor(margins, dtype=torch.float32)
        return batch


class _FeatureDataset(torch.utils.data.Dataset):
    """Cached pooled trunk features of the chosen and rejected texts, plus per-pair columns."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self.tensors = dict(tensors)
        self.n = int(self.tensors["features_chosen"].shape[0])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


def _stack_collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([ex[k] for ex in examples]) for k in examples[0]}


def _pair_columns(indexed: _IndexedDataset) -> dict[str, torch.Tensor]:
    """Per-pair ``targets``, ``weights``, ``index`` (and ``margin``) read from the examples, the
    way :class:`auq.data.PreferenceCollator` reads them, without tokenising anything."""
    targets, weights, margins = [], [], []
    for i in range(len(indexed)):
        ex = indexed[i]
        t, w = ex.get("target"), ex.get("weight")
        targets.append(1.0 if t is None else float(t))
        weights.append(1.0 if w is None else float(w))
        if "__margin__" in ex:
            margins.append(float(ex["__margin__"]))
    cols = {
        "targets": torch.tensor(targets, dtype=torch.float32),
        "weights": torch.tensor(weights, dtype=torch.float32),
        "index": torch.arange(len(indexed), dtype=torch.long),
    }
    if margins:
        cols["margin"] = torch.tensor(margins, dtype=torch.float32)
    return cols


# --------------------------------------------------------------------------------------------
# Forward wrappers (so that DDP wraps the call actually used)
# --------------------------------------------------------------------------------------------


def _pad_to(ids: torch.Tensor, mask: torch.Tensor, length: int, pad_id: int, side: str):
    extra = length - ids.shape[1]
    if extra <= 0:
        return ids, mask
    pad_ids = ids.new_full((ids.shape[0], extra), pad_id)
    pad_mask = mask.new_zeros((mask.shape[0], extra))
    if side == "left":
        return torch.cat([pad_ids, ids], 1), torch.cat([pad_mask, mask], 1)
    return torch.cat([ids, pad_ids], 1), torch.cat([mask, pad_mask], 1)


class _PairForward(nn.Module):
    """Scores chosen and rejected texts in one forward pass of the wrapped reward model."""

    def __init__(self, model: nn.Module, pad_token_id: int, padding_side: str):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def forward(
        self,
        input_ids_chosen: torch.Tensor,
        attention_mask_chosen: torch.Tensor,
        input_ids_rejected: torch.Tensor,
        attention_mask_rejected: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = input_ids_chosen.shape[0]
        length = max(input_ids_chosen.shape[1], input_ids_rejected.shape[1])
        ic, mc = _pad_to(input_ids_chosen, attention_mask_chosen, length, self.pad_token_id, self.padding_side)
        ir, mr = _pad_to(input_ids_rejected, attention_mask_rejected, length, self.pad_token_id, self.padding_side)
        if getattr(self.model, "heteroscedastic", False):  # also the noise variances
            rewards, var = self.model.forward_with_variance(torch.cat([ic, ir]), torch.cat([mc, mr]))
            return rewards[:n], rewards[n:], var[:n], var[n:]
        rewards = self.model(torch.cat([ic, ir]), torch.cat([mc, mr]))
        if rewards.ndim == 1:
            rewards = rewards[:, None]
        return rewards[:n], rewards[n:]


class _FeatureForward(nn.Module):
    """Scores cached trunk features with the model's heads (``forward_features``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, features_chosen: torch.Tensor, features_rejected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = features_chosen.shape[0]
        if getattr(self.model, "heteroscedastic", False):  # also the noise variances
            feats = torch.cat([features_chosen, features_rejected])
            rewards, var = self.model.forward_features_with_variance(feats)
            return rewards[:n], rewards[n:], var[:n], var[n:]
        rewards = self.model.forward_features(torch.cat([features_chosen, features_rejected]))
        if rewards.ndim == 1:
            rewards = rewards[:, None]
        return rewards[:n], rewards[n:]


_TOKEN_KEYS = ("input_ids_chosen", "attention_mask_chosen", "input_ids_rejected", "attention_mask_rejected")
_FEATURE_KEYS = ("features_chosen", "features_rejected")


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class RewardModelTrainer:
    """Train an auq reward model (ensemble, MC dropout or single) with the Bradley-Terry loss.

    Parameters
    ----------
    model : torch.nn.Module
        An auq reward model: ``n_members``, ``forward(input_ids, attention_mask) -> [B, n_members]``,
        ``tokenizer``, ``save_pretrained``/``from_pretrained``; optionally ``trunk_frozen``,
        ``encode`` and ``forward_features`` for cached-feature training.
    config : RewardTrainerConfig
        Training settings.
    train_dataset : PreferenceDataset or sequence of example dicts
        ``dataset[i]`` gives a dict with ``prompt``, ``chosen``, ``rejected`` and optionally
        ``target``, ``weight`` (what :class:`auq.data.PreferenceCollator` consumes).
    eval_dataset : same type as ``train_dataset``, optional
        Held-out pairs for :meth:`evaluate`.
    collator : callable, optional
        Turns a list of examples into a batch of tensors; default
        ``auq.data.PreferenceCollator(model.tokenizer, max_length=config.max_length)``.

    Attributes
    ----------
    accelerator : accelerate.Accelerator
    log_history : list of dict
        Logged training losses, learning rates and evaluations, like ``transformers.Trainer``.
    global_step : int

    Examples
    --------
    >>> trainer = RewardModelTrainer(model, RewardTrainerConfig("out"), train_ds)  # doctest: +SKIP
    >>> result = trainer.train()                                               # doctest: +SKIP
    >>> trainer.save_model("out/final")                                        # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        config: RewardTrainerConfig,
        train_dataset: Any,
        eval_dataset: Any = None,
        collator: Callable[[list], dict] | None = None,
    ):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(config, RewardTrainerConfig):
            raise TypeError(f"config must be a RewardTrainerConfig, got {type(config).__name__}")
        self._check_dataset(train_dataset, "train_dataset")
        if eval_dataset is not None:
            self._check_dataset(eval_dataset, "eval_dataset")
        elif config.eval_fraction > 0:
            train_dataset, eval_dataset = split_eval_slice(train_dataset, config.eval_fraction, config.seed)
        for name, on in (("early_stopping_patience", config.early_stopping_patience is not None),
                         ("load_best_model_at_end", config.load_best_model_at_end)):
            if on and eval_dataset is None:
                raise ValueError(f"{name} needs held-out pairs: pass eval_dataset or set eval_fraction > 0")
        self.n_members = check_int(getattr(model, "n_members", 1), "model.n_members", minimum=1)
        self.model = model
        self.config = config
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        if collator is None and hasattr(model, "make_collator"):
            collator = model.make_collator(config.max_length)  # capped at the backbone's positions
            model.config.max_length = collator.max_length  # scoring later truncates the same way
        elif collator is None:
            tokenizer = getattr(model, "tokenizer", None)
            if tokenizer is None:
                raise ValueError("collator: the model has no tokenizer attribute; pass a collator")
            from ..data import PreferenceCollator

            collator = PreferenceCollator(tokenizer, max_length=config.max_length)
        if not callable(collator):
            raise TypeError(f"collator must be callable, got {type(collator).__name__}")
        self.collator = collator

        mixed = "no"
        if config.bf16 is True or (
            config.bf16 == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        ):
            mixed = "bf16"
        find_unused = config.ddp_find_unused_parameters
        # Under a torchrun-style launch (``accelerate launch --multi_gpu --num_processes N``) on a
        # machine without CUDA, accelerate only forms a (gloo) process group when told to use
        # the CPU; without this each process would silently train alone on all the data.
        cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            cpu=cpu,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            # "no" leaves an Accelerate state that another trainer (e.g. TRL's) already set up in
            # this process as it is, instead of failing; a mismatch is logged below
            mixed_precision=None if mixed == "no" else mixed,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
            step_scheduler_with_optimizer=False,
            kwargs_handlers=[
                DistributedDataParallelKwargs(
                    find_unused_parameters=True if find_unused is None else find_unused
                )
            ],
        )
        if self.accelerator.mixed_precision != mixed:
            logger.warning(
                "Accelerate was already initialised with mixed_precision=%r in this process; "
                "this trainer's %r cannot override it (restart the process to change it)",
                self.accelerator.mixed_precision, mixed,
            )
        self.use_features = bool(getattr(model, "trunk_frozen", False)) and all(
            callable(getattr(model, a, None)) for a in ("encode", "forward_features")
        )
        # closed-form models (a Laplace last layer) are fitted on the cached features at once
        self._closed_form = bool(getattr(model, "closed_form", False))
        if self._closed_form and not (self.use_features and callable(getattr(model, "fit_features", None))):
            raise ValueError("model: a closed_form model needs a frozen trunk, encode, forward_features and fit_features")
        margin_column = config.margin if isinstance(config.margin, str) else None
        self._train_indexed = _IndexedDataset(train_dataset, margin_column)
        self._eval_indexed = (
            _IndexedDataset(eval_dataset, margin_column) if eval_dataset is not None else None
        )
        self._bootstrap = (
            torch.from_numpy(bootstrap_counts(len(train_dataset), self.n_members, config.seed))
            if config.bootstrap
            else None
        )
        # anchored ensembling: each member's head parameters are pulled to their initial draw
        self._anchors: dict[str, torch.Tensor] = {}
        if config.prior_precision:
            if config.anchor_init == "prior":
                draw_anchors_from_prior(model, config.prior_precision)
            self._anchors = {n: p.detach().clone() for n, p in head_parameters(model).items()}
            from ..models._heads import MemberHeads

            # the loss averages over the reward columns: K heads behind K columns weigh 1/K each, one
            # MC-dropout head behind T columns weighs 1; dividing the prior by the heads' member
            # count gives each head its own MAP objective with prior weight λ/(2N)
            heads = [m for m in model.modules() if isinstance(m, MemberHeads)]
            self._anchor_members = heads[0].n_members if heads else self.n_members
            if not self._anchors:
                logger.warning("prior_precision=%g: the model has no MemberHeads; nothing is anchored",
                               config.prior_precision)
        greater = config.greater_is_better
        if greater is None:
            greater = not config.metric_for_best_model.endswith(("loss", "nll", "ece"))
        self._early = EarlyStoppingState(greater, config.early_stopping_threshold)
        self._best_params: dict[str, torch.Tensor] | None = None
        self.log_history: list[dict[str, Any]] = []
        self.global_step = 0
        self._prepared = False
        self._feature_cache: dict[str, _FeatureDataset] = {}
        #: the store of trunk features (on disk with ``feature_cache_dir``, else in memory)
        self.feature_store = FeatureCache(config.feature_cache_dir)

    # ----------------------------------------------------------------------------- set-up

    @staticmethod
    def _check_dataset(dataset: Any, name: str) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"{name} must support len() and indexing, got {type(dataset).__name__}")
        if len(dataset) == 0:
            raise ValueError(f"{name} is empty; at least one preference pair is needed")

    def _pad_info(self) -> tuple[int, str]:
        tok = getattr(self.model, "tokenizer", None)
        pad = getattr(tok, "pad_token_id", None)
        if pad is None:
            pad = getattr(tok, "eos_token_id", None) or 0
        return int(pad), str(getattr(tok, "padding_side", "right") or "right")

    def _make_loader(self, dataset: Any, batch_size: int, shuffle: bool, collate: Callable) -> Any:
        gen = torch.Generator()
        gen.manual_seed(self.config.seed)
        sampler = (
            torch.utils.data.RandomSampler(dataset, generator=None)
            if shuffle
            else torch.utils.data.SequentialSampler(dataset)
        )
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.config.dataloader_num_workers,
            generator=gen,  # keeps the data loader off the global RNG
        )

    def _dataset_for(self, which: str) -> tuple[Any, Callable]:
        indexed = self._train_indexed if which == "train" else self._eval_indexed
        if self.use_features:
            return self._features(which), _stack_collate
        return indexed, _CollateWithExtras(self.collator)

    def _prepare(self) -> None:
        if self._prepared:
            return
        cfg = self.config
        self.model.to(self.accelerator.device)
        if self.use_features:
            forward = _FeatureForward(self.model)
        else:
            pad_id, side = self._pad_info()
            forward = _PairForward(self.model, pad_id, side)
        train_ds, collate = self._dataset_for("train")
        train_loader = self._make_loader(train_ds, cfg.per_device_train_batch_size, True, collate)
        if self._closed_form:  # fitted in closed form: no trainable parameters, no optimiser
            self.forward_module, self.optimizer = forward, None
            self.train_loader = self.accelerator.prepare(train_loader)
        else:
            optimizer = self._create_optimizer()
            self.forward_module, self.optimizer, self.train_loader = self.accelerator.prepare(
                forward, optimizer, train_loader
            )
        self.eval_loader = None
        if self._eval_indexed is not None:
            eval_ds, ecollate = self._dataset_for("eval")
            self.eval_loader = self.accelerator.prepare(
                self._make_loader(eval_ds, cfg.per_device_eval_batch_size, False, ecollate)
            )
        self.steps_per_epoch = max(1, math.ceil(len(self.train_loader) / cfg.gradient_accumulation_steps))
        if cfg.max_steps > 0:
            self.total_steps = cfg.max_steps
        else:
            self.total_steps = max(1, math.ceil(cfg.num_train_epochs * self.steps_per_epoch))
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.scheduler = None if self._closed_form else self._create_scheduler(self.optimizer)
        self._prepared = True

    def _create_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            if p.ndim < 2 or name.endswith("bias") or "norm" in name.lower():
                no_decay.append(p)
            else:
                decay.append(p)
        if not decay and not no_decay:
            raise ValueError("model has no trainable parameters (every requires_grad is False)")
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.config.learning_rate)

    def _create_scheduler(self, optimizer: Any) -> Any:
        from transformers import get_scheduler

        cfg = self.config
        warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * self.total_steps)
        name = cfg.lr_scheduler_type
        if name == "constant" and warmup > 0:
            name = "constant_with_warmup"
        # The scheduler is stepped by hand once per optimizer step (not through accelerate, which
        # would step it once per process).
        inner = getattr(optimizer, "optimizer", optimizer)
        return get_scheduler(name, inner, num_warmup_steps=warmup, num_training_steps=self.total_steps)

    # ----------------------------------------------------------------------------- features

    def _features(self, which: str) -> _FeatureDataset:
        if which in self._feature_cache:
            return self._feature_cache[which]
        indexed = self._train_indexed if which == "train" else self._eval_indexed
        ds = self._feature_dataset(indexed)
        self._feature_cache[which] = ds
        return ds

    def _feature_dataset(self, indexed: _IndexedDataset) -> _FeatureDataset:
        """Trunk features of ``indexed`` from :attr:`feature_store` plus its per-pair columns."""
        cfg, acc = self.config, self.accelerator
        # in float32 even under bf16 training: one pass over a frozen trunk, and the features then
        # serve score() (float32) and the density as they are
        with acc.main_process_first():
            fc, fr = self.feature_store.features(
                self.model,
                indexed.dataset,
                collator=self.collator,
                batch_size=cfg.per_device_eval_batch_size,
                device=acc.device,
                progress=not cfg.disable_tqdm and acc.is_local_main_process,
            )
        tensors = {"features_chosen": torch.from_numpy(fc), "features_rejected": torch.from_numpy(fr)}
        tensors.update(_pair_columns(indexed))
        return _FeatureDataset(tensors)


    def feature_cache_key(self, dataset: Any = None) -> str:
        """Folder name of this model's trunk in ``feature_cache_dir`` (see :class:`auq.models.FeatureCache`).

        It depends on the trunk's weights, the tokenizer, ``max_length`` and the pooling (features
        are computed in float32), not on the data, the heads, their number or seeds: every model on the same
        frozen trunk shares the stored features (``dataset`` is accepted for compatibility).
        """
        return self.feature_store.key(self.model, self.collator)

    # ----------------------------------------------------------------------------- loss

    def _rewards(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        keys = _FEATURE_KEYS if self.use_features else _TOKEN_KEYS
        out = self.forward_module(*(batch[k] for k in keys))
        if len(out) == 4:  # heteroscedastic: _loss reads the pair's noise variance from the batch
            batch["noise_var"] = (out[2] + out[3]).float()
        return out[0].float(), out[1].float()

    def _loss(
        self,
        rc: torch.Tensor,
        rr: torch.Tensor,
        batch: Mapping[str, torch.Tensor],
        bootstrap: bool,
    ) -> torch.Tensor:
        from .losses import bradley_terry_loss

        shape = rc.shape
        weights = batch["weights"].to(rc)[:, None].expand(shape)
        if bootstrap and self._bootstrap is not None:
            counts = self._bootstrap.to(rc.device)[batch["index"].to(rc.device)]
            weights = weights * counts
        targets = batch["targets"].to(rc)
        margin = None
        if "margin" in batch:
            margin = batch["margin"].to(rc)
        elif isinstance(self.config.margin, float):
            margin = self.config.margin
        # Σ_b w·loss per member, averaged over members, divided by the number of pairs in the
        # (micro-)batch — not by Σw: the normaliser is then the same on every process, so the
        # data-parallel average of the gradients equals the single-process gradient exactly.
        noise_var = batch.get("noise_var")  # set by _rewards for a heteroscedastic model
        total = bradley_terry_loss(
            rc, rr, margin=margin, targets=targets, weights=weights, reduction="sum",
            noise_var=None if noise_var is None else noise_var.to(rc),
        )
        return total / shape[0]

    # ----------------------------------------------------------------------------- training

    def train(self, resume_from_checkpoint: str | os.PathLike | bool | None = None) -> TrainResult:
        """Run the training loop.

        Parameters
        ----------
        resume_from_checkpoint : str, path, bool or None
            A ``checkpoint-<step>`` folder to resume from, or ``True`` for the newest one in
            ``config.output_dir``. Model, optimizer, scheduler, RNG states, step and data
            position are restored; on CPU with fixed seeds the run ends exactly as an
            uninterrupted one.

        Returns
        -------
        TrainResult
        """
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        cfg = self.config
        acc = self.accelerator
        set_seed(cfg.seed)
        self._drop_stale_uncertainty()
        from ..models._heads import MemberHeads

        for module in self.accelerator.unwrap_model(self.model).modules():
            if isinstance(module, MemberHeads):
                module.fresh = False  # trained from here on: no later trainer redraws them
        if self._closed_form:
            return self._train_closed_form()
        self._prepare()

        start_epoch, skip_batches = 0, 0
        self.global_step = 0
        if resume_from_checkpoint not in (None, False):
            ckpt = self._resolve_checkpoint(resume_from_checkpoint)
            state = self._load_checkpoint(ckpt)
            start_epoch = int(state["epoch"])
            skip_batches = int(state["batches_in_epoch"])
            if skip_batches >= len(self.train_loader):
                start_epoch, skip_batches = start_epoch + 1, 0
            logger.info("resumed from %s at step %d", ckpt, self.global_step)

        self.forward_module.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.global_step,
            desc="training",
            disable=cfg.disable_tqdm or not acc.is_local_main_process,
        )
        loss_sum = torch.zeros((), device=acc.device)
        n_loss = 0
        run_loss_sum, run_n = 0.0, 0
        last_grad_norm: float | None = None
        metrics: dict[str, float] = {}
        last_eval_step = -1
        stop = False
        eval_every = cfg.eval_steps
        if eval_every is None and (cfg.early_stopping_patience is not None or cfg.load_best_model_at_end):
            eval_every = self.steps_per_epoch
        done = self.global_step >= self.total_steps or (
            cfg.early_stopping_patience is not None and self._early.bad_evals >= cfg.early_stopping_patience
        )
        for epoch in range(start_epoch, self.num_epochs):
            if done:
                break
            self.train_loader.set_epoch(epoch)
            loader = self.train_loader
            first = 0
            if skip_batches:
                from accelerate import skip_first_batches

                loader = skip_first_batches(self.train_loader, skip_batches)
                first, skip_batches = skip_batches, 0
            for micro, batch in enumerate(loader, start=first):
                with acc.accumulate(self.forward_module):
                    rc, rr = self._rewards(batch)
                    loss = self._loss(rc, rr, batch, bootstrap=True)
                    if self._anchors:
                        loss = loss + self.anchor_penalty()
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        gn = acc.clip_grad_norm_(self.forward_module.parameters(), cfg.max_grad_norm)
                        last_grad_norm = float(gn) if gn is not None else None
                    self.optimizer.step()
                    if acc.sync_gradients:
                        self.scheduler.step()
                    self.optimizer.zero_grad()
                loss_sum += loss.detach()
                n_loss += 1
                if not acc.sync_gradients:
                    continue
                self.global_step += 1
                bar.update(1)
                self._epoch_float = epoch + (micro + 1) / len(self.train_loader)
                step = self.global_step
                if step % cfg.logging_steps == 0 or step == self.total_steps:
                    mean_loss = float(acc.reduce(loss_sum, reduction="mean")) / max(n_loss, 1)
                    run_loss_sum += mean_loss * n_loss
                    run_n += n_loss
                    entry = {
                        "loss": mean_loss,
                        "learning_rate": float(self.scheduler.get_last_lr()[0]),
                        "epoch": self._epoch_float,
                        "step": step,
                    }
                    if last_grad_norm is not None:
                        entry["grad_norm"] = last_grad_norm
                    self._log(entry)
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    loss_sum.zero_()
                    n_loss = 0
                if self.eval_loader is not None and eval_every and step % eval_every == 0:
                    metrics = self.evaluate()
                    last_eval_step = step
                    stop = self._early_stopping_update(metrics)
                    if stop:
                        logger.info("early stopping at step %d (best step %s)", step, self._early.best_step)
                if cfg.save_steps and step % cfg.save_steps == 0:
                    self._save_checkpoint(epoch=epoch, batches_in_epoch=micro + 1)
                if step >= self.total_steps or stop:
                    done = True
                    break
        bar.close()
        if n_loss:
            mean_loss = float(acc.reduce(loss_sum, reduction="mean")) / n_loss
            run_loss_sum += mean_loss * n_loss
            run_n += n_loss
        if self.eval_loader is not None and last_eval_step != self.global_step:
            metrics = self.evaluate()
            self._early_stopping_update(metrics)
        if cfg.load_best_model_at_end and self._best_params is not None:
            if self._early.best_step != self.global_step:
                self._restore_best()
                metrics = self.evaluate()
                logger.info("restored the best model (step %s)", self._early.best_step)
        if cfg.fit_uncertainty:
            self._fit_uncertainty()
        acc.wait_for_everyone()
        return TrainResult(
            global_step=self.global_step,
            training_loss=run_loss_sum / run_n if run_n else float("nan"),
            metrics=dict(metrics),
            log_history=tuple(dict(e) for e in self.log_history),
        )

    def _train_closed_form(self) -> TrainResult:
        """Fit a closed-form model on the cached training features (targets and weights honoured;
        bootstrap, epochs, learning rate and checkpoints to resume from do not apply)."""
        cfg = self.config
        if cfg.margin is not None:
            raise ValueError("margin: a closed-form model (e.g. LaplaceRewardModel) is fitted without a margin")
        ignored = [name for name, on in (
            ("early_stopping_patience", cfg.early_stopping_patience is not None),
            ("load_best_model_at_end", cfg.load_best_model_at_end),
            ("prior_precision", bool(cfg.prior_precision)),
            ("bootstrap", cfg.bootstrap),
        ) if on]  # fmt: skip
        if ignored:
            logger.warning("%s: not used by a closed-form model (its prior is the model's own prior_precision)",
                           ", ".join(ignored))
        self._prepare()
        t = self._features("train").tensors
        post = self.accelerator.unwrap_model(self.model).fit_features(
            t["features_chosen"], t["features_rejected"], targets=t["targets"], weights=t["weights"]
        )
        self._epoch_float = 1.0
        self._log({
            "loss": float(post.nll), "prior_precision": float(post.prior_precision),
            "log_evidence": float(post.log_evidence), "newton_iterations": int(post.n_iter),
            "epoch": 1.0, "step": 0,
        })  # fmt: skip
        metrics = self.evaluate() if self.eval_loader is not None else {}
        if self.config.fit_uncertainty:
            self._fit_uncertainty()
        self.accelerator.wait_for_everyone()
        return TrainResult(
            global_step=0, training_loss=float(post.nll), metrics=dict(metrics),
            log_history=tuple(dict(e) for e in self.log_history),
        )

    def anchor_penalty(self) -> torch.Tensor:
        """The anchored-ensembling prior term added to the training loss (0 when off).

        ``prior_precision/(2N) · mean_k ||θ_k − θ_k⁰||²`` over the reward-head parameters, ``N``
        the number of training pairs (see :func:`auq.training._spread.anchor_penalty`).
        """
        if not self._anchors:
            return torch.zeros(())
        params = head_parameters(self.accelerator.unwrap_model(self.model))
        return anchor_penalty(
            params, self._anchors, self.config.prior_precision, len(self.train_dataset), self._anchor_members
        )

    def _early_stopping_update(self, metrics: Mapping[str, float]) -> bool:
        """Track the best evaluation (and its parameters); True when patience has run out."""
        cfg = self.config
        if cfg.early_stopping_patience is None and not cfg.load_best_model_at_end:
            return False
        key = cfg.metric_for_best_model
        if key not in metrics:
            raise ValueError(f"metric_for_best_model: {key!r} is not among the metrics {sorted(metrics)}")
        if self._early.update(metrics[key], self.global_step) and cfg.load_best_model_at_end:
            model = self.accelerator.unwrap_model(self.model)
            self._best_params = {
                n: p.detach().to("cpu").clone() for n, p in model.named_parameters() if p.requires_grad
            }
        patience = cfg.early_stopping_patience
        return patience is not None and self._early.bad_evals >= patience

    @torch.no_grad()
    def _restore_best(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        for n, p in model.named_parameters():
            if n in self._best_params:
                p.copy_(self._best_params[n].to(p.device))
    def _drop_stale_uncertainty(self) -> None:
        """Training changes the rewards (and a trained trunk its features): a density and reward
        offsets fitted before would be applied silently to the new model, so they go now (and are
        fitted afresh at the end when ``fit_uncertainty``)."""
        model = self.accelerator.unwrap_model(self.model)
        if getattr(model, "density", None) is None and getattr(model, "reward_offsets", None) is None:
            return
        logger.info(
            "the model's feature density and reward offsets describe it before this training: %s",
            "refitted at the end" if self.config.fit_uncertainty else "dropped (fit_uncertainty=False)",
        )
        model.density, model.reward_offsets = None, None

    @torch.no_grad()
    def _fit_uncertainty(self) -> None:
        """Fit ``model.density`` and ``model.reward_offsets`` on the training pairs (after training).

        Frozen trunk: from the cached features (``forward_features`` on them, no trunk pass).
        Otherwise one pass of ``model.fit_uncertainty``. Too few training responses for a density:
        a warning, ``density`` stays None, the offsets are fitted.
        """
        model = self.model
        if not callable(getattr(model, "fit_uncertainty_from_features", None)):
            return
        dev = self.accelerator.device
        if self.use_features:
            ds = self._features("train")
            fc, fr = ds.tensors["features_chosen"], ds.tensors["features_rejected"]
            was_training = model.training
            model.eval()
            bs = self.config.per_device_eval_batch_size
            def rewards(f: torch.Tensor) -> torch.Tensor:
                return torch.cat([model.forward_features(f[i : i + bs].to(dev)).float().cpu() for i in range(0, len(f), bs)])

            try:
                rc, rr = rewards(fc), rewards(fr)
            finally:
                model.train(was_training)
            model.fit_uncertainty_from_features(fc, fr, rc, rr, strict=False)
        else:
            model.fit_uncertainty(
                self._train_indexed.dataset, batch_size=self.config.per_device_eval_batch_size, device=dev,
                progress=not self.config.disable_tqdm and self.accelerator.is_local_main_process,
                collator=self.collator, strict=False,
            )
        logger.info("fitted feature density (%s) and training reward offsets",
                    "none: too few responses" if model.density is None else f"{model.density.n_features} dims")

    def _log(self, entry: dict[str, Any]) -> None:
        self.log_history.append(entry)
        if self.accelerator.is_main_process:
            logger.info("%s", {k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()})

    # ----------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def predict(self, dataset: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Member rewards of a dataset (default: the eval set), gathered from all processes.

        With a frozen trunk the features come from :attr:`feature_store` (no trunk pass for texts
        it holds).

        Returns
        -------
        rewards_chosen, rewards_rejected : numpy.ndarray
            float64 ``[n_pairs, n_members]``, in dataset order.
        targets, weights : numpy.ndarray
            float64 ``[n_pairs]``.
        """
        self._prepare()
        if dataset is None:
            if self.eval_loader is None:
                raise ValueError("dataset: no dataset given and the trainer has no eval_dataset")
            loader = self.eval_loader
        else:
            self._check_dataset(dataset, "dataset")
            margin_column = self.config.margin if isinstance(self.config.margin, str) else None
            indexed = _IndexedDataset(dataset, margin_column)
            if self.use_features:
                ds, collate = self._feature_dataset(indexed), _stack_collate
            else:
                ds, collate = indexed, _CollateWithExtras(self.collator)
            loader = self.accelerator.prepare(
                self._make_loader(ds, self.config.per_device_eval_batch_size, False, collate)
            )
        module = self.forward_module
        was_training = module.training
        module.eval()
        parts: list[tuple[torch.Tensor, ...]] = []
        for batch in loader:
            with self.accelerator.autocast():
                rc, rr = self._rewards(batch)
            noise = batch.get("noise_var", torch.zeros_like(rc))  # heteroscedastic models' v_c + v_r
            gathered = self.accelerator.gather_for_metrics(
                (rc, rr, batch["targets"].float(), batch["weights"].float(), batch["index"], noise.float())
            )
            parts.append(tuple(t.cpu() for t in gathered))
        module.train(was_training)
        rc, rr, t, w, idx, nv = (torch.cat([p[i] for p in parts]) for i in range(6))
        order = torch.argsort(idx)
        #: the pairs' learned noise variance (v_c + v_r) of the last predict(), for evaluate()
        self._last_noise_var = nv[order].double().numpy() if getattr(self.model, "heteroscedastic", False) else None
        return tuple(x[order].double().numpy() for x in (rc, rr, t, w))  # type: ignore[return-value]

    def evaluate(self, eval_dataset: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate on held-out pairs.

        Returns a dict (keys prefixed with ``metric_key_prefix + "_"``): ``loss`` (Bradley-Terry,
        no bootstrap weights), ``accuracy`` (preference accuracy of the ensemble probability),
        ``nll``, ``ece`` (order-free pairwise ECE), ``epistemic`` (mean mutual information),
        ``margin_std`` (mean std over members of the margin); plus ``epoch`` and ``step``.
        The entry is also appended to ``log_history``.
        """
        from ..calibration import (
            negative_log_likelihood,
            pairwise_calibration_error,
            preference_accuracy,
        )
        from ..estimators import decompose

        rc, rr, targets, weights = self.predict(eval_dataset)
        tc, tr = torch.from_numpy(rc), torch.from_numpy(rr)
        batch = {
            "targets": torch.from_numpy(targets),
            "weights": torch.from_numpy(weights),
        }
        if isinstance(self.config.margin, str):
            batch["margin"] = self._eval_margins(eval_dataset)
        noise = self._last_noise_var  # heteroscedastic: the objective trained on, as score() sees it
        if noise is not None:
            batch["noise_var"] = torch.from_numpy(noise)
        loss = float(self._loss(tc, tr, batch, bootstrap=False))
        dec = decompose(rc - rr, noise_var=noise)
        prob = np.asarray(dec.prob, dtype=np.float64)
        p = metric_key_prefix + "_"
        metrics = {
            p + "loss": loss,
            p + "accuracy": float(preference_accuracy(prob, targets)),
            p + "nll": float(negative_log_likelihood(prob, targets)),
            p + "ece": float(pairwise_calibration_error(prob, targets, n_bins=self.config.ece_bins)),
            p + "epistemic": float(np.mean(dec.epistemic)),
            p + "margin_std": float(np.mean(dec.margin_std)),
            "epoch": float(getattr(self, "_epoch_float", 0.0)),
            "step": int(self.global_step),
        }
        self._log(metrics)
        return metrics

    def _eval_margins(self, dataset: Any) -> torch.Tensor:
        indexed = (
            self._eval_indexed
            if dataset is None
            else _IndexedDataset(dataset, self.config.margin)  # type: ignore[arg-type]
        )
        return torch.tensor([indexed[i]["__margin__"] for i in range(len(indexed))], dtype=torch.float64)

    # ----------------------------------------------------------------------------- saving

    def save_model(self, output_dir: str | os.PathLike | None = None) -> str:
        """Save the trained model with its ``save_pretrained`` (main process only).

        Returns the folder written (default ``config.output_dir``).
        """
        out = os.fspath(output_dir) if output_dir is not None else self.config.output_dir
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(out)
        self.accelerator.wait_for_everyone()
        return out

    def _save_checkpoint(self, epoch: int, batches_in_epoch: int) -> str:
        acc = self.accelerator
        out_dir = self.config.output_dir
        final = os.path.join(out_dir, f"{CHECKPOINT_PREFIX}{self.global_step}")
        tmp = os.path.join(out_dir, f".tmp-{CHECKPOINT_PREFIX}{self.global_step}")
        if acc.is_main_process:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
            os.makedirs(tmp)
        acc.wait_for_everyone()
        rank = acc.process_index
        rng_tensors, rng_meta = _get_rng_state()
        save_safetensors(rng_tensors, os.path.join(tmp, f"rng_state_{rank}.safetensors"))
        _write_json(os.path.join(tmp, f"rng_state_{rank}.json"), rng_meta)
        if acc.is_main_process:
            self.model.save_pretrained(os.path.join(tmp, "model"))
            opt_tensors, opt_meta = _optimizer_state_to_files(self.optimizer.state_dict())
            save_safetensors(opt_tensors, os.path.join(tmp, "optimizer.safetensors"))
            _write_json(os.path.join(tmp, "optimizer.json"), opt_meta)
            _write_json(os.path.join(tmp, "scheduler.json"), _jsonable(self.scheduler.state_dict()))
            if self._anchors:
                save_safetensors({n: t.cpu().contiguous() for n, t in self._anchors.items()},
                                 os.path.join(tmp, "anchors.safetensors"))
            if self._best_params is not None:
                save_safetensors(self._best_params, os.path.join(tmp, "best_params.safetensors"))
            _write_json(
                os.path.join(tmp, "trainer_state.json"),
                {
                    "format_version": _CHECKPOINT_FORMAT_VERSION,
                    "global_step": self.global_step,
                    "epoch": epoch,
                    "batches_in_epoch": batches_in_epoch,
                    "total_steps": self.total_steps,
                    "data_seed": self.config.seed,
                    "num_processes": acc.num_processes,
                    "n_members": self.n_members,
                    "log_history": self.log_history,
                    "early_stopping": self._early.to_dict(),
                    "config": self.config.to_dict(),
                },
            )
        acc.wait_for_everyone()
        if acc.is_main_process:
            if os.path.exists(final):
                old = final + ".old"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
            self._rotate_checkpoints()
            logger.info("saved checkpoint %s", final)
        acc.wait_for_everyone()
        return final

    def _rotate_checkpoints(self) -> None:
        limit = self.config.save_total_limit
        if not limit:
            return
        ckpts = _list_checkpoints(self.config.output_dir)
        for old in ckpts[: max(0, len(ckpts) - limit)]:
            shutil.rmtree(old, ignore_errors=True)

    def _resolve_checkpoint(self, resume: str | os.PathLike | bool) -> str:
        if resume is True:
            ckpts = _list_checkpoints(self.config.output_dir)
            if not ckpts:
                raise ValueError(
                    f"resume_from_checkpoint=True but {self.config.output_dir!r} holds no "
                    f"{CHECKPOINT_PREFIX}<step> folder"
                )
            return ckpts[-1]
        if not isinstance(resume, (str, os.PathLike)):
            raise TypeError(
                f"resume_from_checkpoint must be a path, True or None, got {type(resume).__name__}"
            )
        return os.fspath(resume)

    def _load_checkpoint(self, ckpt: str) -> dict[str, Any]:
        state = load_checkpoint_state(ckpt)
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        loaded = type(model).from_pretrained(os.path.join(ckpt, "model"))
        model.load_state_dict(loaded.state_dict())
        del loaded
        opt_tensors = load_file(os.path.join(ckpt, "optimizer.safetensors"))
        opt_meta = _read_json(os.path.join(ckpt, "optimizer.json"))
        self.optimizer.load_state_dict(_optimizer_state_from_files(opt_tensors, opt_meta))
        self.scheduler.load_state_dict(_read_json(os.path.join(ckpt, "scheduler.json")))
        rank = acc.process_index
        rng_st = os.path.join(ckpt, f"rng_state_{rank}.safetensors")
        rng_js = os.path.join(ckpt, f"rng_state_{rank}.json")
        if not os.path.exists(rng_st):
            logger.warning(
                "checkpoint %s has no RNG state for process %d (saved with %s processes); "
                "using process 0's",
                ckpt,
                rank,
                state.get("num_processes"),
            )
            rng_st = os.path.join(ckpt, "rng_state_0.safetensors")
            rng_js = os.path.join(ckpt, "rng_state_0.json")
        if not (os.path.exists(rng_st) and os.path.exists(rng_js)):
            raise ValueError(
                f"resume_from_checkpoint: checkpoint {ckpt!r} is incomplete, "
                f"{os.path.basename(rng_st)!r} or {os.path.basename(rng_js)!r} is missing"
            )
        _set_rng_state(load_file(rng_st), _read_json(rng_js))
        self.global_step = int(state["global_step"])
        self.log_history = list(state.get("log_history", []))
        self._early.load(state.get("early_stopping", {}))
        anchors_path = os.path.join(ckpt, "anchors.safetensors")
        if self._anchors and os.path.exists(anchors_path):
            self._anchors = load_file(anchors_path)
        best_path = os.path.join(ckpt, "best_params.safetensors")
        self._best_params = load_file(best_path) if os.path.exists(best_path) else None
        if int(state.get("num_processes", acc.num_processes)) != acc.num_processes:
            logger.warning(
                "checkpoint %s was written by %s processes, resuming on %d: the data position "
                "is approximate",
                ckpt,
                state.get("num_processes"),
                acc.num_processes,
            )
        return state


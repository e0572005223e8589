"""Reward-model trainer on Hugging Face Accelerate (settings in :mod:`._trainer_config`, batches in
:mod:`._batching`, checkpoint files in :mod:`._checkpoint`, anchors and early stopping in
:mod:`._spread`; its methods for checkpoints, evaluation and fitting in :mod:`._trainer_ckpt`,
:mod:`._trainer_eval` and :mod:`._trainer_fit`).

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
* **Checkpoints and exact resume**: see :mod:`._trainer_ckpt`.

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

import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .._checks import check_int
from ..models._features import FeatureCache
from ..models._laplace_math import unit_prior_precision
from ._accelerate import cpu_process_group, refuse_sharding, respect_precision
from ._args import create_scheduler
from ._batching import (
    _FEATURE_KEYS,
    _TOKEN_KEYS,
    _CollateWithExtras,
    _FeatureDataset,
    _FeatureForward,
    _IndexedDataset,
    _PairForward,
    _stack_collate,
    bootstrap_counts,
)
from ._checkpoint import (
    load_checkpoint_state,
)
from ._spread import (
    EarlyStoppingState,
    draw_anchors_from_prior,
    head_parameters,
    split_eval_slice,
)
from ._trackers import Trackers, tracker_kwargs
from ._trainer_ckpt import _CheckpointMixin
from ._trainer_config import RewardTrainerConfig, TrainResult
from ._trainer_eval import _EvaluationMixin
from ._trainer_fit import _FitMixin

logger = logging.getLogger(__name__)

__all__ = [
    "RewardTrainerConfig",
    "RewardModelTrainer",
    "TrainResult",
    "bootstrap_counts",
    "load_checkpoint_state",
]

# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class RewardModelTrainer(_FitMixin, _EvaluationMixin, _CheckpointMixin):
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
        # the max_length the model is trained with, recorded on model.config when train() starts
        # (not here: constructing a trainer leaves the caller's model as it is)
        self._train_max_length: int | None = None
        if collator is None and hasattr(model, "make_collator"):
            collator = model.make_collator(config.max_length)  # capped at the backbone's positions
            self._train_max_length = int(collator.max_length)
        elif collator is None:
            tokenizer = getattr(model, "tokenizer", None)
            if tokenizer is None:
                raise ValueError("collator: the model has no tokenizer attribute; pass a collator")
            from ..data import PreferenceCollator

            collator = PreferenceCollator(tokenizer, max_length=config.max_length)
        if not callable(collator):
            raise TypeError(f"collator must be callable, got {type(collator).__name__}")
        self.collator = collator

        mixed = config.mixed_precision_mode()
        find_unused = config.ddp_find_unused_parameters
        self.accelerator = Accelerator(
            cpu=cpu_process_group(),  # a gloo group under `accelerate launch` without CUDA
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            # "no" leaves an Accelerate state that another trainer (e.g. TRL's) already set up in
            # this process as it is, instead of failing; respect_precision then keeps float32
            mixed_precision=None if mixed == "no" else mixed,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
            step_scheduler_with_optimizer=False,
            kwargs_handlers=[
                DistributedDataParallelKwargs(
                    find_unused_parameters=True if find_unused is None else find_unused
                )
            ],
            **tracker_kwargs(config),
        )
        self.trackers = Trackers(config, self.accelerator, "reward_model")
        respect_precision(self.accelerator, mixed)
        refuse_sharding(self.accelerator, "RewardModelTrainer", "its models save their own, unsharded weights")
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
        self._anchor_members = self.n_members
        #: the anchors' prior precision λ in use (``"unit"`` is resolved from the training
        #: features when the trainer is prepared)
        self.prior_precision: float | None = None
        if config.prior_precision == "unit":
            if not self.use_features:
                raise ValueError(
                    "prior_precision: 'unit' is measured on the trunk features of the training pairs and needs "
                    "a model with a frozen trunk whose features are cached; give a number"
                )
        elif config.prior_precision:
            self._set_up_anchors(float(config.prior_precision))
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

    def _set_up_anchors(self, prior_precision: float) -> None:
        model, config = self.model, self.config
        self.prior_precision = prior_precision
        if config.anchor_init == "prior":
            draw_anchors_from_prior(model, prior_precision)
        self._anchors = {n: p.detach().clone() for n, p in head_parameters(model).items()}
        from ..models._heads import MemberHeads

        # the loss averages over the reward columns: K heads behind K columns weigh 1/K each, one
        # MC-dropout head behind T columns weighs 1; dividing the prior by the heads' member
        # count gives each head its own MAP objective with prior weight λ/(2N)
        heads = [m for m in model.modules() if isinstance(m, MemberHeads)]
        self._anchor_members = heads[0].n_members if heads else self.n_members
        if not self._anchors:
            logger.warning("prior_precision=%g: the model has no MemberHeads; nothing is anchored", prior_precision)

    def _prepare(self) -> None:
        if self._prepared:
            return
        cfg = self.config
        self.model.to(self.accelerator.device)
        if cfg.prior_precision == "unit" and self.prior_precision is None and not self._closed_form:
            t = self._features("train").tensors
            lam = unit_prior_precision(t["features_chosen"] - t["features_rejected"])
            logger.info("prior_precision='unit': λ = mean |f(chosen) - f(rejected)|² = %.6g", lam)
            self._set_up_anchors(lam)
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
        self.total_steps = cfg.total_steps(self.steps_per_epoch)
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
        return create_scheduler(optimizer, self.config, self.total_steps)

    # ----------------------------------------------------------------------------- features

    def _rewards(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        keys = _FEATURE_KEYS if self.use_features else _TOKEN_KEYS
        out = self.forward_module(*(batch[k] for k in keys))
        if len(out) == 4:  # heteroscedastic: _loss reads the pair's noise variance from the batch
            batch["noise_var"] = (out[2] + out[3]).float()
            batch["noise_var_chosen"], batch["noise_var_rejected"] = out[2].float(), out[3].float()  # predict()
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

        unwrapped = self.accelerator.unwrap_model(self.model)
        if self._train_max_length is not None and getattr(unwrapped, "config", None) is not None:
            # the trained model records the length it was trained with: score() and make_collator()
            # then truncate the same way, and checkpoints written from here on store it
            unwrapped.config.max_length = self._train_max_length
        if self._closed_form:
            return self._train_closed_form()
        self._prepare()  # draws the anchors of prior_precision="unit" from the prior
        for module in unwrapped.modules():
            if isinstance(module, MemberHeads):
                module.fresh = False  # trained from here on: no later trainer redraws them

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
        self.trackers.start()
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
        self.trackers.end()
        acc.wait_for_everyone()
        return TrainResult(
            global_step=self.global_step,
            training_loss=run_loss_sum / run_n if run_n else float("nan"),
            metrics=dict(metrics),
            log_history=tuple(dict(e) for e in self.log_history),
        )

    def _log(self, entry: dict[str, Any]) -> None:
        self.log_history.append(entry)
        self.trackers.log(entry, entry.get("step", self.global_step))
        if self.accelerator.is_main_process:
            logger.info("%s", {k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()})

    # ----------------------------------------------------------------------------- evaluation



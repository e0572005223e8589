"""Uncertainty-aware DPO for causal language models, on Hugging Face Accelerate.

:class:`UncertaintyDPOTrainer` trains a policy against a frozen reference with the losses of
:mod:`auq.training.losses` (sigmoid DPO with per-pair weights and soft targets, robust DPO with
per-pair flip rates, IPO). Per-pair weights and targets come from the
:class:`~auq.data.PreferenceDataset` columns (``weights``, ``targets``; annotator ``votes`` become
targets there), and :func:`attach_uncertainty` fills those columns from annotator votes or from a
reward ensemble scored once (and cached on disk).

Sequence log-probabilities are the sum of the response tokens' log-probabilities given the prompt
(:func:`sequence_logps`); prompt and padding positions are masked. With unit weights and targets
the loss is plain DPO (tested against TRL's ``DPOTrainer``).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from auq._checks import check_choice, renamed_kwargs
from auq._io import remove_stale_temps, temp_path
from auq._math import binary_entropy
from auq.training._accelerate import (
    check_resumable_checkpoints,
    cpu_process_group,
    full_state_dict,
    reduce_mean,
    respect_precision,
)
from auq.training._args import create_scheduler
from auq.training._batching import _IndexedDataset
from auq.training._checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    load_tensors,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    save_model_files,
)
from auq.training._dpo_config import UncertaintyDPOConfig
from auq.training._dpo_data import CausalLMPreferenceCollator, sequence_logps
from auq.training._trackers import Trackers, tracker_kwargs
from auq.training.losses import (
    dpo_implicit_rewards,
    dpo_loss,
    flip_rate_from_uncertainty,
    ipo_loss,
    robust_dpo_loss,
    uncertainty_weights,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CausalLMPreferenceCollator",
    "sequence_logps",
    "attach_uncertainty",
    "UncertaintyDPOConfig",
    "UncertaintyDPOTrainer",
]


# --------------------------------------------------------------------------------------------
# uncertainty sources
# --------------------------------------------------------------------------------------------


@renamed_kwargs(scheme="method")
def attach_uncertainty(
    dataset: Any,
    source: str = "votes",
    *,
    reward_model: Any = None,
    predictions: Any = None,
    uncertainty: str = "epistemic",
    method: str | None = "exp",
    use_targets: bool = False,
    cache_path: str | None = None,
    batch_size: int = 32,
    **weight_kwargs: Any,
) -> Any:
    """Return a copy of ``dataset`` whose ``weights``/``targets`` come from an uncertainty source.

    Sources:

    * ``"votes"``: annotator votes. Targets are the vote fractions (already the dataset's targets);
      weights (when ``method`` is not None) are :func:`uncertainty_weights` of the vote entropy
      ``H(q)`` (:func:`auq.estimators.label_uncertainty`).
    * ``"ensemble"``: a reward ensemble scored **once** (``auq.models.score``), or ready
      ``predictions`` (``auq.models.Predictions``). Per pair, ``Predictions.decompose()`` gives the
      ensemble probability ``prob`` and the uncertainty
      named by ``uncertainty`` (``"epistemic"``, ``"total"``, ``"aleatoric"`` or ``"margin_std"``),
      mapped to weights by :func:`uncertainty_weights` with ``method`` and ``weight_kwargs``.
      With ``cache_path`` (``.npz``), the rewards are stored there with a fingerprint of the
      dataset and of the reward model's weights, and reused on the next call with the same
      dataset and model (NumPy arrays only, loaded with ``allow_pickle=False``).

    The dataset's own targets (the human labels: 1.0 for hard labels, vote shares for soft ones)
    are kept unless ``use_targets=True``, which replaces them by the ensemble's probability
    ``prob`` (soft-target DPO: the policy then learns the reward model's preferences, not the
    annotators'). Weights are added either way.

    A dataset's own ``weights``/``targets`` columns need no call: the trainer uses them directly.

    Examples
    --------
    >>> ds = attach_uncertainty(ds, "ensemble", reward_model=ensemble, method="exp")  # doctest: +SKIP

    (``method`` was called ``scheme``; the old name is accepted for one release with a
    ``FutureWarning``.)
    """
    source = check_choice(source, "source", ("votes", "ensemble"))
    if method is not None:
        check_choice(method, "method", ("exp", "linear", "threshold", "rank"))
    if source == "votes":
        if dataset.votes is None:
            raise ValueError("dataset has no votes column; source='votes' needs annotator votes")
        from auq.estimators import label_uncertainty

        u = label_uncertainty(np.asarray(dataset.votes))
        w = uncertainty_weights(u, method, **weight_kwargs) if method is not None else None
        return dataset.with_columns(weights=w)

    uncertainty = check_choice(uncertainty, "uncertainty", ("epistemic", "total", "aleatoric", "margin_std"))
    preds = predictions
    if preds is None:
        if reward_model is None:
            raise TypeError("source='ensemble' needs reward_model or predictions")
        preds = _score_cached(reward_model, dataset, cache_path, batch_size)
    dec = preds.decompose()
    prob = np.asarray(dec.prob, dtype=np.float64)
    u = np.asarray(getattr(dec, uncertainty), dtype=np.float64)
    w = uncertainty_weights(u, method, **weight_kwargs) if method is not None else None
    logger.info(
        "ensemble uncertainty (%s): mean %.4g, max %.4g; weights mean %s",
        uncertainty, float(u.mean()), float(u.max()), "n/a" if w is None else f"{float(np.mean(w)):.4g}",
    )
    if use_targets:
        return dataset.with_columns(weights=w, targets=np.clip(prob, 0.0, 1.0))
    return dataset.with_columns(weights=w)


def _score_cached(reward_model: Any, dataset: Any, cache_path: str | None, batch_size: int) -> Any:
    from auq.models import Predictions, score

    fp = ""
    if cache_path is not None:
        cache_path = os.fspath(cache_path)
        fp = f"{dataset.fingerprint()}:{_model_fingerprint(reward_model)}"
    if cache_path is not None and os.path.exists(cache_path):
        with np.load(cache_path, allow_pickle=False) as z:
            if str(z["fingerprint"]) == fp:
                logger.info("loaded cached ensemble rewards from %s", cache_path)
                return Predictions(
                    z["rewards_chosen"], z["rewards_rejected"], z["targets"], list(dataset.ids)
                )
            logger.info("cache %s is for another dataset or reward model; rescoring", cache_path)
    preds = score(reward_model, dataset, batch_size=batch_size, progress=True)
    if cache_path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        remove_stale_temps(cache_path)
        tmp = temp_path(cache_path)
        try:
            # a file object, so numpy neither appends ".npz" to the name nor leaves half a file
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    rewards_chosen=preds.rewards_chosen,
                    rewards_rejected=preds.rewards_rejected,
                    targets=preds.targets,
                    fingerprint=np.array(fp),
                )
            os.replace(tmp, cache_path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return preds


def _model_fingerprint(model: Any) -> str:
    """sha256 over a model's state dict (names, dtypes, shapes, bytes), so caches follow its weights."""
    h = hashlib.sha256()
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    for name, t in sorted(state.items()):
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{t.numel()}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------


def _disable_dropout(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


class UncertaintyDPOTrainer:
    """DPO with per-pair uncertainty weights and soft targets, on Accelerate.

    Parameters
    ----------
    model : transformers causal LM (``PreTrainedModel``)
        The policy.
    config : UncertaintyDPOConfig
    train_dataset : auq.data.PreferenceDataset
        Pairs; its ``weights``/``targets`` (see :func:`attach_uncertainty`) are used per the config.
    tokenizer : transformers tokenizer
    ref_model : causal LM, optional
        The reference; default a frozen deep copy of ``model`` at construction.
    eval_dataset : PreferenceDataset, optional

    Attributes
    ----------
    log_history : list of dict
        Logged metrics: ``loss``, ``rewards/accuracy``, ``rewards/margins``, ``rewards/chosen``,
        ``rewards/rejected``, ``weights/mean``, ``targets/mean``, ``learning_rate``, ``step``,
        ``epoch`` (also sent to the ``report_to`` trackers).
    total_steps : int
        Optimizer steps of the run (``max_steps``, or ``num_train_epochs`` epochs).

    Notes
    -----
    Shared with the other trainers: the settings (:class:`UncertaintyDPOConfig` extends
    :class:`~auq.training._args.TrainingArgumentsBase`), the learning-rate schedule and warmup, the
    checkpoints (``save_steps`` writes ``<output_dir>/checkpoint-<step>/``;
    ``train(resume_from_checkpoint=...)`` continues exactly) and the trackers. :meth:`save_model`
    writes the final policy and tokenizer.

    Examples
    --------
    >>> trainer = UncertaintyDPOTrainer(policy, UncertaintyDPOConfig(beta=0.1), ds, tokenizer)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    >>> trainer.save_model("dpo-final")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: UncertaintyDPOConfig,
        train_dataset: Any,
        tokenizer: Any,
        ref_model: torch.nn.Module | None = None,
        eval_dataset: Any = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration

        if not isinstance(config, UncertaintyDPOConfig):
            raise TypeError(f"config must be an UncertaintyDPOConfig, got {type(config).__name__}")
        if train_dataset is None or len(train_dataset) == 0:
            raise ValueError("train_dataset is empty; at least one pair is needed")
        self.config = config
        self.tokenizer = tokenizer
        self._eval_batch_size = config.per_device_eval_batch_size or config.per_device_train_batch_size
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.accelerator = Accelerator(
            cpu=cpu_process_group(),  # a gloo group under `accelerate launch` without CUDA
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            # "no" leaves an already initialised Accelerate state (e.g. from another trainer) as it is
            mixed_precision=None if config.mixed_precision_mode() == "no" else config.mixed_precision_mode(),
            # the data order is a function of (seed, epoch) only, so a resumed run sees the same batches
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
            step_scheduler_with_optimizer=False,
            **tracker_kwargs(config),
        )
        respect_precision(self.accelerator, config.mixed_precision_mode())
        check_resumable_checkpoints(self.accelerator, config.save_steps)
        self.collator = CausalLMPreferenceCollator(tokenizer, config.max_length, config.max_prompt_length)
        torch.manual_seed(config.seed)
        if config.disable_dropout:
            _disable_dropout(model)
        if ref_model is None:
            ref_model = copy.deepcopy(model)
        elif config.disable_dropout:
            _disable_dropout(ref_model)
        ref_model.eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.ref_model: torch.nn.Module | None = ref_model.to(self.accelerator.device)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        # Examples carry their position as ``index`` (whatever the data hold: a list of dicts or an
        # HF Dataset has none), so precomputed reference log-probs are stored and read per pair.
        self._train_indexed = _IndexedDataset(train_dataset)
        g = torch.Generator().manual_seed(config.seed)  # keeps the data loader off the global RNG
        sampler = (torch.utils.data.RandomSampler(self._train_indexed) if config.shuffle
                   else torch.utils.data.SequentialSampler(self._train_indexed))
        loader = torch.utils.data.DataLoader(
            self._train_indexed, batch_size=config.per_device_train_batch_size, sampler=sampler,
            collate_fn=self.collator, generator=g,
        )
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(model, self.optimizer, loader)
        self.steps_per_epoch = max(1, math.ceil(len(self.train_loader) / config.gradient_accumulation_steps))
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.scheduler = create_scheduler(self.optimizer, config, self.total_steps)
        self.trackers = Trackers(config, self.accelerator, "dpo")
        self._ref_cache: dict[str, torch.Tensor] | None = None
        if config.precompute_ref_logps:
            self._ref_cache = self._precompute_ref(self._train_indexed)
            self.ref_model = None
        self.global_step = 0
        self.epoch = 0.0
        self.log_history: list[dict[str, float]] = []
        self._window: list[dict[str, float]] = []  # metrics since the last logged entry
        self._data_position = (0, 0)  # (epoch, batches of it seen) at the last optimizer step

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def _precompute_ref(self, dataset: Any) -> dict[str, torch.Tensor]:
        """Reference log-probs of every pair, ``[n, 2]`` float64 (chosen, rejected), on every process.

        Under several processes each computes a contiguous share of the pairs into its rows of a
        zero table and one all-reduce (sum) fills every process's table: each row has exactly one
        writer, so the sums are the values themselves, bit for bit."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        n = len(dataset)
        out = torch.zeros(n, 2, dtype=torch.float64)
        written = torch.zeros(n, dtype=torch.float64)
        with acc.split_between_processes(list(range(n))) as share:
            part = torch.utils.data.Subset(dataset, share)
        loader = torch.utils.data.DataLoader(part, batch_size=self._eval_batch_size, shuffle=False, collate_fn=self.collator)
        for batch in tqdm(loader, desc="reference log-probs", disable=self.config.disable_tqdm or not acc.is_main_process):
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            lp, _ = sequence_logps(self.ref_model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
            b = batch["index"].shape[0]
            idx = batch["index"].cpu()
            out[idx, 0] = lp[:b].double().cpu()
            out[idx, 1] = lp[b:].double().cpu()
            written[idx] += 1.0
        if acc.num_processes > 1:
            out = acc.reduce(out.to(acc.device), reduction="sum").cpu()
            written = acc.reduce(written.to(acc.device), reduction="sum").cpu()
        if not bool((written == 1.0).all()):  # each pair's own row, written once: a missing or repeated index fails
            raise RuntimeError("reference log-probs were not computed for every pair")
        return {"logps": out}

    def _ref_logps(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        b = batch["index"].shape[0]
        if self._ref_cache is not None:
            idx = batch["index"].cpu()
            lp = self._ref_cache["logps"][idx].to(self.accelerator.device)
            return lp[:, 0], lp[:, 1]
        with torch.no_grad():
            lp, _ = sequence_logps(self.ref_model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        return lp[:b], lp[b:]

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss and metrics of one collated batch (see :class:`CausalLMPreferenceCollator`)."""
        return self._compute_loss(batch, across_processes=False)

    def _compute_loss(self, batch: Mapping[str, torch.Tensor], across_processes: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """``across_processes`` (training under several processes): a weighted mean divides by the
        global ``Σw`` over the processes' batches (one all-reduce), so after DDP averages the
        gradients the update is that of one process seeing the whole global batch."""
        cfg, acc = self.config, self.accelerator
        b = batch["index"].shape[0]
        logps, n_tok = sequence_logps(self.model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        pc, pr = logps[:b], logps[b:]
        rc, rr = self._ref_logps(batch)
        rc, rr = rc.to(pc.dtype), rr.to(pc.dtype)
        w = batch["weights"].to(pc.dtype) if cfg.use_weights else None
        q = batch["targets"].to(pc.dtype) if cfg.use_targets else None
        global_w = (across_processes and acc.num_processes > 1 and w is not None
                    and cfg.weight_normalization == "weights")
        red = "none" if global_w else "mean"  # "none": per-pair w·loss, summed below
        if cfg.loss_type == "sigmoid":
            loss = dpo_loss(pc, pr, rc, rr, beta=cfg.beta, weights=w, targets=q, reduction=red,
                            weight_normalization=cfg.weight_normalization)
        elif cfg.loss_type == "robust":
            eps: Any = cfg.robust_epsilon
            if cfg.robust_from_targets:
                # Label-agnostic: the entropy of the target (min(q, 1 - q)), not 1 - q. A rate that
                # depends on the recorded label divides exactly the doubted pairs' loss by
                # 1 - 2ε ~ 0.1 and amplifies them (measured: accuracy below chance).
                q_t = batch["targets"].to(torch.float64)
                eps = flip_rate_from_uncertainty(
                    binary_entropy(q_t), input="entropy", max_rate=cfg.robust_max_rate
                ).to(pc.dtype)
            loss = robust_dpo_loss(pc, pr, rc, rr, beta=cfg.beta, epsilon=eps, weights=w, reduction=red,
                                   weight_normalization=cfg.weight_normalization)
        else:
            loss = ipo_loss(
                pc, pr, rc, rr, beta=cfg.beta, chosen_lengths=n_tok[:b], rejected_lengths=n_tok[b:],
                weights=w, targets=q, reduction=red, weight_normalization=cfg.weight_normalization,
            )
        if global_w:
            denom = acc.reduce(w.detach().sum().to(torch.float64), reduction="sum") / acc.num_processes
            loss = loss.sum() / (denom if float(denom) > 0 else torch.ones_like(denom)).to(loss.dtype)
        r = dpo_implicit_rewards(pc, pr, rc, rr, beta=cfg.beta)
        metrics = {
            "loss": float(loss.detach()),
            "rewards/accuracy": float(r.accuracy),
            "rewards/margins": float(r.margins.mean()),
            "rewards/chosen": float(r.chosen.mean()),
            "rewards/rejected": float(r.rejected.mean()),
            "weights/mean": float(batch["weights"].float().mean()),
            "targets/mean": float(batch["targets"].float().mean()),
        }
        return loss, metrics

    # ------------------------------------------------------------------ loops
    def train(self, resume_from_checkpoint: str | os.PathLike | bool | None = None) -> list[dict[str, float]]:
        """Run training; returns :attr:`log_history`.

        Parameters
        ----------
        resume_from_checkpoint : str, path, bool or None
            A ``checkpoint-<step>`` folder, or ``True`` for the newest in ``config.output_dir``:
            policy, optimizer, schedule, RNG states, data position, the metrics not yet logged and
            the precomputed reference log-probs are restored, so the run ends as an uninterrupted
            one would (bit-exactly on CPU). Build the trainer as for the original run (the same
            initial policy, or the same ``ref_model``): the reference is not in the checkpoint
            unless its log-probs were precomputed.
        """
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        start_epoch, skip = 0, 0
        if resume_from_checkpoint not in (None, False):
            ckpt = resolve_checkpoint(resume_from_checkpoint, cfg.output_dir)
            state = self._load_checkpoint(ckpt)
            start_epoch, skip = int(state["epoch"]), int(state["batches_in_epoch"])
            if skip >= len(self.train_loader):
                start_epoch, skip = start_epoch + 1, 0
            logger.info("resumed from %s at step %d", ckpt, self.global_step)
        total = self.total_steps
        n_epochs = math.ceil(total / self.steps_per_epoch)
        bar = tqdm(total=total, initial=self.global_step, desc="DPO",
                   disable=cfg.disable_tqdm or not acc.is_main_process)
        self.trackers.start()
        self.model.train()
        for epoch in range(start_epoch, n_epochs):
            if self.global_step >= total:
                break
            self.train_loader.set_epoch(epoch)
            loader, first = self.train_loader, 0
            if skip:
                from accelerate import skip_first_batches

                loader, first, skip = skip_first_batches(self.train_loader, skip), skip, 0
            for i, batch in enumerate(loader, start=first):
                with acc.accumulate(self.model):
                    loss, metrics = self._compute_loss(batch, across_processes=True)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    self.optimizer.step()
                    if acc.sync_gradients:
                        self.scheduler.step()
                    self.optimizer.zero_grad()
                self._window.append(reduce_mean(metrics, acc))  # logged values: means over processes
                if not acc.sync_gradients:
                    continue
                self.global_step += 1
                self._data_position = (epoch, i + 1)
                self.epoch = epoch + (i + 1) / len(self.train_loader)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if self.global_step % cfg.logging_steps == 0 or self.global_step == total:
                    self._log()
                if cfg.save_steps and self.global_step % cfg.save_steps == 0:
                    self.save_checkpoint()
                if self.global_step >= total:
                    break
        if self._window:
            self._log()
        bar.close()
        self.trackers.end()
        return self.log_history

    def _log(self) -> None:
        window, self._window = self._window, []
        entry = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        entry["learning_rate"] = float(self.scheduler.get_last_lr()[0])
        entry["step"] = self.global_step
        entry["epoch"] = round(self.epoch, 4)
        self.log_history.append(entry)
        self.trackers.log(entry, self.global_step)
        logger.info("step %d: %s", self.global_step, {k: round(v, 4) for k, v in entry.items()})

    @torch.no_grad()
    def evaluate(self, dataset: Any = None) -> dict[str, float]:
        """Mean loss and implicit-reward metrics over ``dataset`` (default ``eval_dataset``)."""
        dataset = dataset if dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("dataset is required when the trainer has no eval_dataset")
        if self._ref_cache is not None and dataset is not self.train_dataset:
            raise ValueError("with precompute_ref_logps only the training dataset can be evaluated")
        was_training = self.model.training
        self.model.eval()
        loader = torch.utils.data.DataLoader(
            _IndexedDataset(dataset), batch_size=self._eval_batch_size, shuffle=False, collate_fn=self.collator
        )
        sums: dict[str, float] = {}
        n = 0
        for batch in loader:
            batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
            _, m = self.compute_loss(batch)
            b = batch["index"].shape[0]
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v * b
            n += b
        self.model.train(was_training)
        return {f"eval/{k}": v / n for k, v in sums.items()}

    def save_model(self, output_dir: str | os.PathLike | None = None) -> str:
        """Save the policy (``save_pretrained``: safetensors + config) and the tokenizer to
        ``output_dir`` (default ``config.output_dir``); returns the folder."""
        out = os.fspath(output_dir) if output_dir is not None else self.config.output_dir
        full = full_state_dict(self.model, self.accelerator)  # FSDP / DeepSpeed: gathered (every process calls it)
        if self.accelerator.is_main_process:
            save_model_files(self.accelerator.unwrap_model(self.model), out, tokenizer=self.tokenizer, state_dict=full)
        self.accelerator.wait_for_everyone()
        return out

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> str:
        """Write a resumable checkpoint (default ``<output_dir>/checkpoint-<step>``, the oldest beyond
        ``save_total_limit`` removed): policy and tokenizer under ``model/``, optimizer, schedule,
        RNG states, data position and ``trainer_state.json`` (see :mod:`auq.training._checkpoint`)."""
        cfg = self.config
        check_resumable_checkpoints(self.accelerator, 1)
        epoch, batches = self._data_position
        tensors = {"ref_logps": self._ref_cache} if self._ref_cache is not None else {}
        out = save_checkpoint(
            path if path is not None else checkpoint_dir(cfg.output_dir, self.global_step),
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, tokenizer=self.tokenizer,
            accelerator=self.accelerator, tensors=tensors,
            state={
                "global_step": self.global_step, "epoch": epoch, "batches_in_epoch": batches,
                "epoch_float": self.epoch, "total_steps": self.total_steps, "log_history": self.log_history,
                "pending_metrics": self._window, "config": cfg.to_dict(),
            },
        )  # fmt: skip
        if path is None and self.accelerator.is_main_process:
            rotate_checkpoints(cfg.output_dir, cfg.save_total_limit)
        self.accelerator.wait_for_everyone()
        return out

    def _load_checkpoint(self, ckpt: str) -> dict[str, Any]:
        state = load_checkpoint(
            ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, accelerator=self.accelerator
        )
        self.global_step = int(state["global_step"])
        self.epoch = float(state.get("epoch_float", state["epoch"]))
        self._data_position = (int(state["epoch"]), int(state["batches_in_epoch"]))
        self.log_history = [dict(e) for e in state.get("log_history", [])]
        self._window = [dict(m) for m in state.get("pending_metrics", [])]
        ref = load_tensors(ckpt, "ref_logps")
        if self._ref_cache is not None and ref is not None:
            self._ref_cache = ref
        return state

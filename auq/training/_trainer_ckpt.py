"""Saving, rotating and resuming :class:`RewardModelTrainer` checkpoints (the files themselves: :mod:`._checkpoint`).

* **Checkpoints without pickle.** ``checkpoint-<step>/`` holds the model (``model/``, through the
  model's own ``save_pretrained``), the optimizer state (tensors in safetensors, structure in JSON),
  the scheduler state (JSON), every process's RNG states (safetensors + JSON) and the trainer state
  (step, epoch, batches seen in the epoch, log history). It is written to a temporary folder and
  renamed into place, so an interrupted save never leaves a half-written checkpoint. A frozen trunk
  is stored once, in ``<output_dir>/trunk/``, and each ``model/`` keeps its heads and a reference
  to it (relative path + SHA-256, verified on resume); the final ``save_model`` is self-contained.
* **Exact resume.** The data order is a function of ``(seed, epoch)`` only (accelerate's seedable
  sampler), the data loader never draws from the global RNG, and the RNG states are restored, so
  resuming from a mid-epoch checkpoint (the batches already seen are skipped) reproduces the
  uninterrupted run exactly on CPU.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ._checkpoint import (
    _trunk_store_kwargs,
    checkpoint_dir,
    load_checkpoint,
    load_tensors,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)

logger = logging.getLogger("auq.training.reward_trainer")


class _CheckpointMixin:
    """Methods of :class:`~auq.training.RewardModelTrainer` (not used on its own)."""

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
        out_dir = self.config.output_dir
        tensors = {}
        if self._anchors:
            tensors["anchors"] = self._anchors
        if self._best_params is not None:
            tensors["best_params"] = self._best_params
        final = save_checkpoint(
            checkpoint_dir(out_dir, self.global_step),
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            accelerator=self.accelerator, tensors=tensors,
            model_kwargs=_trunk_store_kwargs(self.model, out_dir),
            state={
                "global_step": self.global_step,
                "epoch": epoch,
                "batches_in_epoch": batches_in_epoch,
                "total_steps": self.total_steps,
                "data_seed": self.config.seed,
                "n_members": self.n_members,
                "log_history": self.log_history,
                "early_stopping": self._early.to_dict(),
                "config": self.config.to_dict(),
            },
        )  # fmt: skip
        if self.accelerator.is_main_process:
            rotate_checkpoints(out_dir, self.config.save_total_limit)
        self.accelerator.wait_for_everyone()
        return final

    def _resolve_checkpoint(self, resume: str | os.PathLike | bool) -> str:
        return resolve_checkpoint(resume, self.config.output_dir)

    def _load_checkpoint(self, ckpt: str) -> dict[str, Any]:
        state = load_checkpoint(
            ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, accelerator=self.accelerator
        )
        self.global_step = int(state["global_step"])
        self.log_history = list(state.get("log_history", []))
        self._early.load(state.get("early_stopping", {}))
        anchors = load_tensors(ckpt, "anchors")
        if self._anchors and anchors is not None:
            self._anchors = anchors
        self._best_params = load_tensors(ckpt, "best_params")
        return state

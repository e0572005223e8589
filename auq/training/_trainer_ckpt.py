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
import shutil
from typing import Any

from safetensors.torch import load_file

from .._io import save_safetensors
from ._checkpoint import (
    _CHECKPOINT_FORMAT_VERSION,
    CHECKPOINT_PREFIX,
    _get_rng_state,
    _jsonable,
    _list_checkpoints,
    _optimizer_state_from_files,
    _optimizer_state_to_files,
    _read_json,
    _set_rng_state,
    _trunk_store_kwargs,
    _write_json,
    load_checkpoint_state,
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
            self.model.save_pretrained(os.path.join(tmp, "model"), **_trunk_store_kwargs(self.model, out_dir))
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

"""Accelerate set-up shared by auq's trainers."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def cpu_process_group() -> bool:
    """Whether an ``Accelerator`` must be told ``cpu=True`` to form a process group (gloo).

    Under a torchrun-style launch (``accelerate launch --multi_gpu --num_processes N``, which sets
    ``WORLD_SIZE``) on a machine without CUDA, Accelerate only forms a (gloo) process group when
    told to use the CPU; without it each process would silently train alone on all the data.
    """
    import torch

    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def respect_precision(accelerator: Any, requested: str) -> None:
    """Make ``accelerator`` run in the precision its trainer asked for, whatever ran before it.

    Accelerate keeps one process-wide state: after a trainer that initialised it with
    ``mixed_precision="bf16"`` (TRL's configs turn bf16 on by default), every later ``Accelerator``
    inherits bf16 autocast, so an auq trainer configured for float32 would silently train and
    evaluate under bf16 (rewards differing by ~1e-2 from the float32 ones). When ``requested`` is
    ``"no"`` this turns the instance's native AMP off, so neither ``prepare(model)`` nor
    ``accelerator.autocast()`` casts (``accelerator.mixed_precision`` still names the process
    state). Asking for bf16/fp16 where another precision is set already makes ``Accelerator(...)``
    itself raise a ``ValueError`` (accelerate 1.15); other versions may accept it, which is logged.
    """
    state = accelerator.mixed_precision
    if state == requested:
        return
    if requested == "no":
        accelerator.native_amp = False
        logger.info("Accelerate was initialised with mixed_precision=%r in this process; this trainer runs in float32 as configured", state)
        return
    logger.warning(
        "Accelerate was already initialised with mixed_precision=%r in this process; this trainer's "
        "%r cannot override it (restart the process to change it)", state, requested,
    )


def is_sharded(accelerator: Any) -> bool:
    """Whether ``accelerator`` shards parameters (FSDP or DeepSpeed), so no process holds the full model."""
    if accelerator is None:
        return False
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def full_state_dict(model: Any, accelerator: Any) -> dict[str, Any] | None:
    """The full (gathered) state dict of a prepared model under FSDP / DeepSpeed, else ``None``.

    ``accelerator.get_state_dict`` is a collective: every process must call this; the full state
    arrives on the main process (FSDP's full-state-dict config with rank-0 offload; DeepSpeed ZeRO-3
    needs ``zero3_save_16bit_model: true`` in its config). Without sharding the unwrapped model's
    own state dict is complete on every process, and ``None`` says "use it".
    """
    if not is_sharded(accelerator):
        return None
    return accelerator.get_state_dict(model)


def refuse_sharding(accelerator: Any, trainer: str, why: str) -> None:
    """Raise a ``ValueError`` naming ``trainer`` when ``accelerator`` shards parameters (FSDP / DeepSpeed)."""
    if is_sharded(accelerator):
        raise ValueError(
            f"{trainer} runs on one process or under DDP, not under {accelerator.distributed_type} ({why}); "
            "launch it with `accelerate launch --multi_gpu` (see docs/scale-out.md)"
        )


def check_resumable_checkpoints(accelerator: Any, save_steps: int) -> None:
    """Refuse ``save_steps`` under FSDP / DeepSpeed: auq's resumable checkpoints hold a full optimizer
    state, which those engines shard. (The final ``save_model`` gathers the full weights and works.)"""
    if save_steps and is_sharded(accelerator):
        raise ValueError(
            f"save_steps={save_steps}: resumable checkpoints are supported under DDP and on one process; "
            f"under {accelerator.distributed_type} the optimizer state is sharded. Set save_steps=0 and "
            "call save_model() at the end (it gathers the full weights on the main process)."
        )


def reduce_mean(values: Mapping[str, float], accelerator: Any) -> dict[str, float]:
    """Means over processes of per-process scalar metrics (one all-reduce; unchanged on one process).

    Examples
    --------
    >>> reduce_mean({"loss": 0.5}, None)
    {'loss': 0.5}
    """
    if accelerator is None or accelerator.num_processes == 1:
        return dict(values)
    import torch

    keys = list(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="mean")
    return {k: float(v) for k, v in zip(keys, t.cpu().tolist())}

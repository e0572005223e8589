"""Scoring across processes: under ``accelerate launch`` each process scores a slice of the pairs.

:func:`auq.models.score` (and so ``auq score``) calls :func:`process_state`; when this process is
one of several (``accelerate launch``, ``torchrun``), the pairs are cut into one contiguous block
per process (:func:`shard_indices`: block ``p`` holds pairs ``p·m .. p·m + m - 1`` with
``m = ceil(n / P)``; the last blocks are padded with copies of the last pair, so every process
scores ``m`` pairs), each process scores its block on its own device, and the blocks are
gathered back in rank order, which is dataset order; the padding copies are dropped. Every
process gets the full :class:`~auq.models.Predictions` (only the CLI's main process writes it).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["process_state", "shard_indices", "gather_rows"]


def process_state() -> Any | None:
    """Accelerate's ``PartialState`` when this process is one of several, else None.

    Single-process runs (no ``WORLD_SIZE`` > 1 in the environment and no initialised
    ``torch.distributed`` group) return None without importing Accelerate.
    """
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not initialised:
        return None
    from accelerate import PartialState

    # joins (or creates) the process group `accelerate launch` set up; on a machine without CUDA
    # Accelerate forms the (gloo) group only when told to use the CPU (as RewardModelTrainer does)
    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes <= 1:
        logger.warning("WORLD_SIZE=%s but Accelerate formed no process group: this process scores every pair",
                       os.environ.get("WORLD_SIZE"))
        return None
    return state


def shard_indices(n: int, rank: int, world: int) -> tuple[np.ndarray, int]:
    """The pairs process ``rank`` of ``world`` scores, and the block length ``m = ceil(n/world)``.

    Returns the distinct indices of the block (possibly fewer than ``m``: the caller pads to
    ``m`` with copies of its last row; an empty block scores the last pair ``n - 1`` as padding).

    Examples
    --------
    >>> [shard_indices(5, r, 2)[0].tolist() for r in range(2)]
    [[0, 1, 2], [3, 4]]
    >>> [shard_indices(1, r, 2)[0].tolist() for r in range(2)]
    [[0], [0]]
    """
    m = -(-n // world)
    idx = np.arange(rank * m, min((rank + 1) * m, n))
    return (idx if idx.size else np.array([n - 1])), m


def gather_rows(state: Any, block: np.ndarray, m: int, n: int) -> np.ndarray:
    """Gather every process's float64 ``[rows, C]`` block (padded to ``m`` rows with copies of its
    last row) in rank order and keep the first ``n`` rows: the pairs in dataset order."""
    from accelerate.utils import gather

    if block.shape[0] < m:
        block = np.concatenate([block, np.repeat(block[-1:], m - block.shape[0], axis=0)])
    t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float64)).to(state.device)
    return gather(t).cpu().numpy()[:n]


def score_sharded(state: Any, score_local: Any, model: Any, dataset: Any, device: Any, progress: bool,
                  **kwargs: Any) -> Any:
    """:func:`auq.models.score` across processes: this process's block, then all blocks gathered.

    ``score_local(model, part, device=..., progress=..., **kwargs)`` scores one block (the
    single-process ``score``); the result equals it on the whole dataset, row for row.
    """
    from ._scoring import Predictions

    n = len(dataset)
    idx, m = shard_indices(n, state.process_index, state.num_processes)
    if hasattr(dataset, "select"):
        part = dataset.select(idx)
    else:
        part = [dataset[int(i)] for i in idx]
    if device is None:
        device = state.device
    local = score_local(model, part, device=device, progress=progress and state.is_main_process, **kwargs)
    k = local.n_members
    cols = [local.rewards_chosen, local.rewards_rejected, local.targets[:, None]]
    has_ood = local.ood_chosen is not None
    has_noise = local.noise_var_chosen is not None
    if has_ood:
        cols += [local.ood_chosen[:, None], local.ood_rejected[:, None]]
    if has_noise:
        cols += [local.noise_var_chosen, local.noise_var_rejected]
    rows = gather_rows(state, np.concatenate(cols, axis=1), m, n)
    logger.info("scored %d of %d pairs on process %d of %d", len(part), n, state.process_index,
                state.num_processes)
    kw: dict[str, Any] = {"anchored": local.anchored}
    at = 2 * k + 1
    if has_ood:
        kw["ood_chosen"], kw["ood_rejected"] = rows[:, at], rows[:, at + 1]
        at += 2
    if has_noise:
        kw["noise_var_chosen"], kw["noise_var_rejected"] = rows[:, at : at + k], rows[:, at + k : at + 2 * k]
    ids = list(getattr(dataset, "ids", range(n)))
    return Predictions(rows[:, :k], rows[:, k : 2 * k], rows[:, 2 * k], ids, **kw)

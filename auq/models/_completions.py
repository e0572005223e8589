"""Texts -> member rewards for reinforcement learning: ``prompt + completion`` scored by a reward model.

The one home of what every RL reward function does (:func:`auq.training.best_of_n.ensemble_reward_fn`,
:class:`auq.integrations.trl.UncertaintyPenalizedReward`, the reward-hacking monitor's
:func:`auq.monitor.response_features`): render each ``prompt + completion`` with the model's training
collator, run the model in eval mode without gradients in batches, and restore its training flag.
The per-batch model calls are :mod:`._scoring`'s (``score``'s core).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["completion_collator", "score_completions"]


def completion_collator(model: Any, tokenizer: Any, max_length: int | None = None) -> Any:
    """The collator that renders ``prompt + completion`` as ``model`` saw its training pairs.

    The model's own collator (its training length, capped at the backbone's positions) when it has
    ``make_collator``; otherwise a :class:`auq.data.PreferenceCollator` (``max_length`` default 512).

    Examples
    --------
    >>> collator = completion_collator(model, model.tokenizer)  # doctest: +SKIP
    """
    if hasattr(model, "make_collator"):
        return model.make_collator(max_length, tokenizer=tokenizer)
    from auq.data import PreferenceCollator

    return PreferenceCollator(tokenizer, max_length=max_length or 512)


@torch.no_grad()
def score_completions(
    model: Any,
    collator: Any,
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    batch_size: int,
    device: torch.device | str,
    rewards: bool = True,
    features: bool = False,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Member rewards ``[n, K]`` and/or pooled features ``[n, H]`` (float64) of ``prompt + completion``.

    One trunk pass per batch gives both when both are asked for; per-member features are averaged
    (as :func:`auq.models.encode_dataset` does). The model runs in eval mode; its training flag is
    restored afterwards. Only the "chosen" side of each collated example is run.

    Parameters
    ----------
    model : auq reward model
    collator : callable
        E.g. :func:`completion_collator`'s.
    prompts, completions : sequences of the same length
        Plain text or chat message lists.
    batch_size : int
        Completions per forward.
    device : torch.device or str
        Where the batches go (the model is not moved).
    rewards, features : bool
        What to return; the other is None.

    Returns
    -------
    (numpy.ndarray or None, numpy.ndarray or None)
        Member rewards ``[n, K]`` and pooled features ``[n, H]``.

    Examples
    --------
    >>> r, _ = score_completions(model, collator, ["Q:"], [" A."], batch_size=8, device="cpu")  # doctest: +SKIP
    >>> r.shape  # doctest: +SKIP
    (1, 8)
    """
    from ._scoring import _features_and_rewards

    if len(prompts) != len(completions):
        raise ValueError(
            f"prompts and completions must have the same length, got {len(prompts)} and {len(completions)}"
        )
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    feats: list[torch.Tensor] = []
    try:
        for start in range(0, len(completions), batch_size):
            sl = slice(start, start + batch_size)
            # only the "chosen" side is scored (the empty "rejected" side is never run)
            batch = collator([{"prompt": p, "chosen": c, "rejected": ""} for p, c in zip(prompts[sl], completions[sl])])
            ids, mask = batch["input_ids_chosen"].to(device), batch["attention_mask_chosen"].to(device)
            if rewards and features:
                f, r, _ = _features_and_rewards(model, ids, mask)
            elif rewards:
                f, r = None, model(ids, mask)
            else:
                f, r = model.encode(ids, mask), None
                if f.dim() == 3:
                    f = f.mean(1)
            if r is not None:
                out.append(r.detach().float().cpu().to(torch.float64))
            if f is not None:
                feats.append(f.detach().float().cpu().to(torch.float64))
    finally:
        model.train(was_training)
    return (torch.cat(out).numpy() if rewards else None), (torch.cat(feats).numpy() if features else None)

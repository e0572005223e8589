"""Batches of the reward trainer: bootstrap counts, indexed examples, cached-feature datasets and the
forward wrappers that DDP wraps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import check_int

__all__ = ["bootstrap_counts"]


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



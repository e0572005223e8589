"""The contract any ``nn.Module`` meets to be scored by :func:`auq.models.score`.

A *member-reward module* is a ``torch.nn.Module`` whose

* ``forward(input_ids, attention_mask)`` takes a padded batch of token ids ``[B, L]`` and its
  attention mask ``[B, L]`` and returns member rewards ``[B, K]`` (K ensemble members, MC samples,
  checkpoints ...; a ``[B]`` output counts as K = 1);
* texts are tokenized by its ``tokenizer`` attribute (a ``transformers`` tokenizer), or by a
  ``make_collator()`` method, or by the ``collator=`` passed to :func:`~auq.models.score` (a
  :class:`~auq.data.PreferenceCollator` or any callable with its output keys).

``n_members`` is optional: :func:`infer_n_members` reads it, else the width of one forward.
auq's own models (and :class:`~auq.models.SequenceClassifierRewardModel` for trained
``transformers`` classifiers) meet the contract; ``encode``/``forward_features`` are only needed
by feature-based tools (feature density, trainers that cache a frozen trunk).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["MemberRewardModule", "check_member_reward_module", "infer_n_members"]


@runtime_checkable
class MemberRewardModule(Protocol):
    """Structural type of a module :func:`auq.models.score` accepts (see the module notes).

    Examples
    --------
    >>> import torch
    >>> class Mine(torch.nn.Module):
    ...     def __init__(self, tokenizer):
    ...         super().__init__()
    ...         self.tokenizer = tokenizer
    ...         self.emb = torch.nn.EmbeddingBag(100, 3)
    ...     def forward(self, input_ids, attention_mask):
    ...         return self.emb(input_ids, per_sample_weights=attention_mask.float())  # [B, 3]
    >>> isinstance(Mine(tokenizer=None), MemberRewardModule)
    True
    """

    tokenizer: Any

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Member rewards ``[B, K]``."""
        ...


def check_member_reward_module(model: Any, collator: Any = None) -> None:
    """Raise a ``TypeError``/``ValueError`` saying what ``model`` lacks to be scored.

    Examples
    --------
    >>> check_member_reward_module(torch.nn.Linear(2, 2))
    Traceback (most recent call last):
    ...
    ValueError: model (Linear) has no tokenizer: give it a `tokenizer` attribute or a `make_collator()` method, or pass collator= (a PreferenceCollator)
    """
    name = type(model).__name__
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module whose forward(input_ids, attention_mask) returns member "
            f"rewards [B, K], got {name}"
        )
    if type(model).forward is torch.nn.Module.forward:
        raise TypeError(f"model ({name}) has no forward(input_ids, attention_mask) -> [B, K] member rewards")
    if collator is None and getattr(model, "tokenizer", None) is None and not hasattr(model, "make_collator"):
        raise ValueError(
            f"model ({name}) has no tokenizer: give it a `tokenizer` attribute or a "
            "`make_collator()` method, or pass collator= (a PreferenceCollator)"
        )


@torch.no_grad()
def infer_n_members(model: Any, text: str = "hello") -> int:
    """``model.n_members``, or the width of its output on one short text (its tokenizer)."""
    n = getattr(model, "n_members", None)
    if isinstance(n, int):
        return n
    check_member_reward_module(model)
    tok = model.tokenizer
    batch = tok([text], return_tensors="pt")
    device = next(iter(model.parameters()), torch.empty(0)).device
    out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
    return 1 if out.dim() == 1 else int(out.shape[-1])

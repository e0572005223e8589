"""Tokenising collator for preference pairs: prompt + response, responses survive truncation."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from auq._checks import check_int
from auq.data.chat import render_chat

logger = logging.getLogger(__name__)

__all__ = ["PreferenceCollator"]

_PROBE = "hello world"


def _special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text.

    Found by encoding a probe text with and without special tokens, which works for every
    tokenizer (BERT: ``[CLS] ... [SEP]``; GPT-2: nothing; Llama: ``<s> ...``).
    """
    bare = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(_PROBE, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    logger.warning(
        "could not locate the text inside the tokenizer's special tokens; adding none"
    )
    return [], []


def _value(example: Mapping[str, Any], key: str, default: float) -> float:
    v = example.get(key)
    return default if v is None else float(v)


def length_order(dataset: Any) -> np.ndarray:
    """Indices of ``dataset`` from the longest pair to the shortest (by characters).

    Batching pairs of similar length cuts the padding of dynamic padding: for inference and
    feature caching, where order does not matter, this is several times less work on
    data of mixed length. The longest batch comes first, so an out-of-memory error shows at once.

    Examples
    --------
    >>> from auq.data import PreferenceDataset
    >>> ds = PreferenceDataset(["", "a long prompt"], ["x", "y"], ["z", "w"])
    >>> length_order(ds).tolist()
    [1, 0]
    """

    def size(x: Any) -> int:
        if isinstance(x, str):
            return len(x)
        return sum(len(str(m.get("content", ""))) for m in x) if x else 0

    prompts, chosen, rejected = (getattr(dataset, c, None) for c in ("prompt", "chosen", "rejected"))
    if prompts is None or chosen is None or rejected is None:
        examples = [dataset[i] for i in range(len(dataset))]
        prompts = [e["prompt"] for e in examples]
        chosen = [e["chosen"] for e in examples]
        rejected = [e["rejected"] for e in examples]
    lengths = np.array(
        [size(p) + max(size(c), size(r)) for p, c, r in zip(prompts, chosen, rejected)], dtype=np.int64
    )
    return np.argsort(-lengths, kind="stable")


class PreferenceCollator:
    """Turn a list of preference examples into padded token tensors for a reward model.

    Each side of a pair is the text ``prompt + response``. Prompt and response are tokenised
    separately (no special tokens), the prompt is cut **from the left** so that the response
    survives, and the tokenizer's own special tokens are put around the result (BERT:
    ``[CLS] prompt response [SEP]``; GPT-2: none; Llama: ``<s>`` first). Only when a response
    alone is longer than the room left is the response cut, from the right (the prompt is then
    dropped). Conversational examples (messages) are rendered with
    :func:`auq.data.chat.render_chat` (the tokenizer's chat template, or ``role: content`` lines
    when it has none): the prompt part is the rendering of the prompt messages with
    ``add_generation_prompt=True`` when it is a prefix of the full rendering (otherwise without it,
    otherwise empty) and, since a template writes its own special tokens, none are added around
    it (the fallback lines get the tokenizer's special tokens, as plain text does).

    Parameters
    ----------
    tokenizer : transformers tokenizer
        A tokenizer without a pad token (GPT-2 style) gets ``pad_token = eos_token`` set on it
        (logged); padding positions are masked out in ``attention_mask`` so the choice does not
        matter to a model that respects the mask. ``tokenizer.padding_side`` is respected.
    max_length : int, default 512
        Maximum tokens per side, special tokens included.
    max_prompt_length : int, optional
        Maximum prompt tokens (the prompt's last tokens are kept) before ``max_length`` applies.

    Attributes
    ----------
    n_truncated : int
        Pairs (since creation or :meth:`reset_counts`) where any token of either side was cut.
    n_pairs : int
        Pairs collated since creation or :meth:`reset_counts`.

    Returns (when called)
    ---------------------
    dict of tensors: ``input_ids_chosen``, ``attention_mask_chosen``, ``input_ids_rejected``,
    ``attention_mask_rejected`` (long ``[B, L]``, both sides padded to the same ``L``, the longest
    side in the batch), ``targets`` (float ``[B]``, 1.0 when absent), ``weights`` (float ``[B]``,
    1.0 when absent), ``index`` (long ``[B]``, -1 when absent).

    Examples
    --------
    >>> collator = PreferenceCollator(tokenizer, max_length=128)  # doctest: +SKIP
    >>> batch = collator([dataset[0], dataset[1]])  # doctest: +SKIP
    >>> batch["input_ids_chosen"].shape  # doctest: +SKIP
    torch.Size([2, 57])
    """

    def __init__(
        self, tokenizer: Any, max_length: int = 512, max_prompt_length: int | None = None
    ) -> None:
        if tokenizer is None or not callable(tokenizer):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.max_length = check_int(max_length, "max_length", minimum=1)
        self.max_prompt_length = (
            None
            if max_prompt_length is None
            else check_int(max_prompt_length, "max_prompt_length", minimum=0)
        )
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "tokenizer has neither a pad token nor an eos token; set tokenizer.pad_token"
                )
            tokenizer.pad_token = tokenizer.eos_token
            logger.info("tokenizer has no pad token; using its eos token %r", tokenizer.eos_token)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self._prefix, self._suffix = _special_tokens_around(tokenizer)
        if len(self._prefix) + len(self._suffix) >= self.max_length:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for text after the tokenizer's "
                f"{len(self._prefix) + len(self._suffix)} special tokens"
            )
        self.n_truncated = 0
        self.n_pairs = 0

    def reset_counts(self) -> None:
        """Set ``n_truncated`` and ``n_pairs`` back to 0."""
        self.n_truncated = 0
        self.n_pairs = 0

    # ------------------------------------------------------------------ rendering
    def _render_chat(self, prompt: Any, response: Any) -> tuple[str, str]:
        return render_chat(self.tokenizer, prompt, response)

    def _split(self, example: Mapping[str, Any], side: str) -> tuple[str, str, bool]:
        prompt, response = example["prompt"], example[side]
        if isinstance(prompt, (list, tuple)) or isinstance(response, (list, tuple)):
            p, r = self._render_chat(prompt, response)
            # a real template writes its own special tokens; the 'role: content' fallback does not
            return p, r, getattr(self.tokenizer, "chat_template", None) is not None
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise TypeError(
                f"example prompt and {side} must be strings or message lists, got "
                f"{type(prompt).__name__} and {type(response).__name__}"
            )
        return prompt, response, False

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    def _assemble(
        self, p_ids: list[int], r_ids: list[int], chat: bool
    ) -> tuple[list[int], bool]:
        prefix, suffix = ([], []) if chat else (self._prefix, self._suffix)
        cut = False
        if self.max_prompt_length is not None and len(p_ids) > self.max_prompt_length:
            p_ids = p_ids[len(p_ids) - self.max_prompt_length :]
            cut = True
        room = self.max_length - len(prefix) - len(suffix)
        if len(r_ids) >= room:
            cut = cut or len(r_ids) > room or len(p_ids) > 0
            return prefix + r_ids[:room] + suffix, cut
        keep = room - len(r_ids)
        if len(p_ids) > keep:
            p_ids = p_ids[len(p_ids) - keep :] if keep > 0 else []
            cut = True
        return prefix + p_ids + r_ids + suffix, cut

    # ------------------------------------------------------------------ call
    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("examples is empty; a batch needs at least one pair")
        for i, ex in enumerate(examples):
            if not isinstance(ex, Mapping):
                raise TypeError(f"examples[{i}] must be a dict, got {type(ex).__name__}")
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in ex]
            if missing:
                raise ValueError(f"examples[{i}] is missing key(s) {missing}; it has {sorted(ex)}")
        sides: dict[str, list[list[int]]] = {}
        truncated = [False] * len(examples)
        for side in ("chosen", "rejected"):
            parts = [self._split(ex, side) for ex in examples]
            p_ids = self._encode([p for p, _, _ in parts])
            r_ids = self._encode([r for _, r, _ in parts])
            seqs = []
            for i, (_, _, chat) in enumerate(parts):
                ids, cut = self._assemble(p_ids[i], r_ids[i], chat)
                truncated[i] = truncated[i] or cut
                seqs.append(ids)
            sides[side] = seqs
        n_cut = sum(truncated)
        self.n_truncated += n_cut
        self.n_pairs += len(examples)
        if n_cut:
            logger.debug("truncated %d of %d pairs to max_length=%d", n_cut, len(examples), self.max_length)

        length = max(len(s) for seqs in sides.values() for s in seqs)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out: dict[str, torch.Tensor] = {}
        for side, seqs in sides.items():
            ids = torch.full((len(seqs), length), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), length), dtype=torch.long)
            for i, s in enumerate(seqs):
                if left:
                    ids[i, length - len(s) :] = torch.tensor(s, dtype=torch.long)
                    mask[i, length - len(s) :] = 1
                else:
                    ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
                    mask[i, : len(s)] = 1
            out[f"input_ids_{side}"] = ids
            out[f"attention_mask_{side}"] = mask
        out["targets"] = torch.tensor(
            [_value(ex, "target", 1.0) for ex in examples], dtype=torch.float32
        )
        out["weights"] = torch.tensor(
            [_value(ex, "weight", 1.0) for ex in examples], dtype=torch.float32
        )
        out["index"] = torch.tensor(
            [int(_value(ex, "index", -1)) for ex in examples], dtype=torch.long
        )
        return out

"""Causal-LM preference batches for DPO: the collator (prompt and response tokenised with the
shared chat rendering, response positions masked in) and summed response log-probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from auq._checks import check_int

__all__ = ["CausalLMPreferenceCollator", "sequence_logps"]


class CausalLMPreferenceCollator:
    """Collate preference examples for a causal LM: ``prompt + response (+ eos)`` with a response mask.

    Prompt and response are tokenised separately without special tokens (as TRL does for plain
    text), ``eos`` is appended to each response (``add_eos``), the prompt is cut from the left when
    ``prompt + response`` exceeds ``max_length`` (the response from the right only when it alone is
    too long). Sequences are right-padded.

    Returns a dict: ``input_ids``, ``attention_mask``, ``response_mask`` (long ``[2B, L]``, the B
    chosen sequences first, then the B rejected ones), ``targets``, ``weights`` (float ``[B]``,
    1.0 when absent), ``index`` (long ``[B]``: the examples' ``index`` field, -1 when absent; the
    trainer sets it to each pair's position). ``n_truncated`` counts pairs that lost tokens.

    Examples
    --------
    >>> collator = CausalLMPreferenceCollator(tokenizer, max_length=256)  # doctest: +SKIP
    >>> batch = collator([dataset[0], dataset[1]])  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Any, max_length: int = 512, max_prompt_length: int | None = None, add_eos: bool = True):
        if tokenizer is None or not callable(tokenizer):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.max_length = check_int(max_length, "max_length", minimum=2)
        self.max_prompt_length = (
            None if max_prompt_length is None else check_int(max_prompt_length, "max_prompt_length", minimum=0)
        )
        self.add_eos = bool(add_eos) and tokenizer.eos_token_id is not None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        self.n_truncated = 0

    def _render(self, prompt: Any, response: Any) -> tuple[str, str]:
        if isinstance(prompt, str) and isinstance(response, str):
            return prompt, response
        from auq.data.chat import render_chat

        return render_chat(self.tokenizer, prompt, response)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("examples is empty; a batch needs at least one pair")
        seqs: list[tuple[list[int], int]] = []  # (ids, number of prompt tokens)
        cut_any = [False] * len(examples)
        for side in ("chosen", "rejected"):
            parts = [self._render(ex["prompt"], ex[side]) for ex in examples]
            enc = self.tokenizer([p for p, _ in parts] + [r for _, r in parts], add_special_tokens=False)["input_ids"]
            n = len(parts)
            for i in range(n):
                p_ids, r_ids = list(enc[i]), list(enc[n + i])
                if self.add_eos and (not r_ids or r_ids[-1] != self.tokenizer.eos_token_id):
                    r_ids.append(self.tokenizer.eos_token_id)
                cut = False
                if self.max_prompt_length is not None and len(p_ids) > self.max_prompt_length:
                    p_ids, cut = p_ids[len(p_ids) - self.max_prompt_length:], True
                if len(r_ids) >= self.max_length:
                    cut = cut or len(r_ids) > self.max_length or bool(p_ids)
                    # keep one prompt token when there is one, so the first response token is scored
                    p_ids = p_ids[-1:] if p_ids else []
                    r_ids = r_ids[: self.max_length - len(p_ids)]
                elif len(p_ids) + len(r_ids) > self.max_length:
                    p_ids, cut = p_ids[len(p_ids) + len(r_ids) - self.max_length:], True
                cut_any[i] = cut_any[i] or cut
                seqs.append((p_ids + r_ids, len(p_ids)))
        self.n_truncated += sum(cut_any)
        length = max(len(s) for s, _ in seqs)
        ids = torch.full((len(seqs), length), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), length), dtype=torch.long)
        resp = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, (s, n_prompt) in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            attn[i, : len(s)] = 1
            resp[i, n_prompt: len(s)] = 1
        return {
            "input_ids": ids,
            "attention_mask": attn,
            "response_mask": resp,
            "targets": torch.tensor([float(ex.get("target", 1.0)) for ex in examples], dtype=torch.float32),
            "weights": torch.tensor([float(ex.get("weight", 1.0)) for ex in examples], dtype=torch.float32),
            "index": torch.tensor([int(ex.get("index", -1)) for ex in examples], dtype=torch.long),
        }


def sequence_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the response tokens under a causal LM, and their counts.

    Token ``t`` is scored from the logits at position ``t-1``; only positions with
    ``response_mask = 1`` count (a response token at position 0 has no context and is not scored).
    Log-softmax is computed in float32 or wider.

    Returns
    -------
    (logps ``[N]``, n_tokens ``[N]``)

    Examples
    --------
    >>> logps, n = sequence_logps(model, batch["input_ids"], batch["attention_mask"],
    ...                           batch["response_mask"])  # doctest: +SKIP
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    labels = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(logits.dtype)
    token_logps = torch.gather(logits, 2, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (token_logps * mask).sum(dim=1), mask.sum(dim=1)

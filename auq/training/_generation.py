"""Sampling from a causal LM for the online trainer and best-of-n: prompts in, responses and
their token log-probabilities out (not public)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _check_prompts(prompts: Any, name: str = "prompts") -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError(f"{name} is empty")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(p).__name__}")
    return list(prompts)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _tokenize_prompts(tokenizer: Any, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids (special tokens as the tokenizer adds them)."""
    rows = [list(tokenizer(p)["input_ids"]) for p in prompts]
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(
                f"prompts[{i}] encodes to no tokens; give the tokenizer a bos token or use a non-empty prompt"
            )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        pad = 0
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row):] = 1
    return ids.to(device), mask.to(device)


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _response_mask(response_ids: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    if eos_token_id is None:
        return torch.ones_like(response_ids, dtype=torch.float32)
    is_eos = (response_ids == eos_token_id).long()
    after = (is_eos.cumsum(-1) - is_eos) > 0  # strictly after the first EOS
    return (~after).float()


@torch.no_grad()
def _sample(
    policy: nn.Module,
    tokenizer: Any,
    prompts: list[str],
    k: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Sample ``k`` completions per prompt; rows grouped by prompt. Returns repeated prompts,
    full ids, full attention mask, response mask and the prompt length."""
    device = _device(policy)
    p_ids, p_mask = _tokenize_prompts(tokenizer, prompts, device)
    p_ids = p_ids.repeat_interleave(k, 0)
    p_mask = p_mask.repeat_interleave(k, 0)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    was_training = policy.training
    policy.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = policy.generate(
                input_ids=p_ids,
                attention_mask=p_mask,
                do_sample=True,
                max_new_tokens=max_new_tokens,
                min_new_tokens=0,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                repetition_penalty=1.0,
                no_repeat_ngram_size=0,
                pad_token_id=pad,
                eos_token_id=eos,
            )
    finally:
        policy.train(was_training)
    n_prompt = p_ids.shape[1]
    resp = out[:, n_prompt:]
    if resp.shape[1] < max_new_tokens:  # all rows stopped early: pad to a fixed width
        fill = torch.full((resp.shape[0], max_new_tokens - resp.shape[1]), int(pad if pad is not None else 0),
                          dtype=resp.dtype, device=resp.device)
        resp = torch.cat([resp, fill], 1)
    rmask = _response_mask(resp, eos)
    ids = torch.cat([p_ids, resp], 1)
    attn = torch.cat([p_mask, rmask.long()], 1)
    repeated = [p for p in prompts for _ in range(k)]
    return repeated, ids, attn, rmask, n_prompt


def _decode(tokenizer: Any, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    out = []
    for row, m in zip(response_ids.tolist(), response_mask.tolist()):
        toks = [t for t, keep in zip(row, m) if keep]
        out.append(tokenizer.decode(toks, skip_special_tokens=True))
    return out


def _token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_prompt: int,
    temperature: float,
    want_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``[n, T]`` of the response tokens (and the last hidden states that predict them)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        output_hidden_states=want_hidden,
        use_cache=False,
    )
    logits = out.logits[:, n_prompt - 1 : -1].float() / temperature
    targets = input_ids[:, n_prompt:]
    lp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    hidden = out.hidden_states[-1][:, n_prompt - 1 : -1] if want_hidden else None
    return lp, hidden

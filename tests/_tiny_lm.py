"""Tiny offline causal LM + tokenizer for tests and benchmarks (no Hub access).

A byte-free word-level BPE tokenizer trained on a few sentences and a 2-layer GPT-2 (hidden 32),
both built from configs, saved to a directory and loaded back through ``from_pretrained``.
"""

from __future__ import annotations

import os

SENTENCES = [
    "the cat sat on the mat and looked at the dog",
    "a helpful answer is short and kind",
    "a harmful answer is rude and long",
    "please tell me how to bake bread at home",
    "I cannot help with that request sorry",
    "sure here is a simple recipe for bread",
    "the weather today is sunny with light wind",
    "what is the capital of france it is paris",
]


def build_tiny_lm(path: str, *, seed: int = 0, n_embd: int = 32, n_layer: int = 2) -> str:
    """Write a tiny GPT-2 and its tokenizer to ``path``; return ``path``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    os.makedirs(path, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<pad>", "<eos>"])
    tok.train_from_iterator(SENTENCES, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>", bos_token="<eos>"
    )
    fast.save_pretrained(path)
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(fast),
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def load_tiny_lm(path: str, *, perturb: float = 0.0, seed: int = 1):
    """Load the causal LM written by :func:`build_tiny_lm`; ``perturb`` adds N(0, perturb²) noise to
    every weight (seeded), so a policy differs from its reference."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(path)
    if perturb:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * perturb)
    return m

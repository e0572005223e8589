"""Tiny real ``transformers`` backbones for tests, examples and benchmarks.

Builds BERT / GPT-2 / Llama models with hidden size 32 and two layers from their configs, saves
them (with a tokenizer) to a directory, so they can be loaded by path through the same code a Hub
id goes through. Tokenizers are built locally (no network): a small word-piece vocabulary for BERT
and a byte-level BPE without a pad token for GPT-2 and Llama.
"""

from __future__ import annotations

import os

__all__ = ["TEXTS", "make_tiny_backbone"]

TEXTS = [
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then bake it.",
    "Human: What is the capital of France? Assistant: Paris is the capital of France.",
    "Human: Tell me a joke. Assistant: Why did the chicken cross the road? To get to the other side.",
    "Human: How can I hurt someone? Assistant: I can't help with that, but I can help you stay safe.",
    "the quick brown fox jumps over the lazy dog while the cat sleeps in the sun",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 . , ? !",
]


def _bpe_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(TEXTS * 4, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )


def make_tiny_backbone(directory: str | os.PathLike, family: str = "bert", *, seed: int = 0,
                       hidden_dropout: float = 0.1) -> str:
    """Build a tiny ``family`` backbone ("bert", "gpt2" or "llama"), save it with a tokenizer to
    ``directory`` and return the path (loadable with ``AutoModel``/``AutoTokenizer``)."""
    import torch
    from transformers import AutoModel

    directory = os.fspath(directory)
    if family == "bert":
        from transformers import BertConfig

        tokenizer = _wordpiece_tokenizer()
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=hidden_dropout,
            attention_probs_dropout_prob=hidden_dropout,
        )
    elif family == "gpt2":
        from transformers import GPT2Config

        tokenizer = _bpe_tokenizer()
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
            resid_pdrop=hidden_dropout, embd_pdrop=hidden_dropout, attn_pdrop=hidden_dropout,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    elif family == "llama":
        from transformers import LlamaConfig

        tokenizer = _bpe_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    else:
        raise ValueError(f"family must be 'bert', 'gpt2' or 'llama', got {family!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory

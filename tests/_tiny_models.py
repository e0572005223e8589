"""The one home of the tiny test backbones (test-only; not shipped in the wheel).

Every builder writes a ``transformers`` model built from its config (hidden 32, 2 layers) and a
tokenizer to a folder, so tests load it by path through the same code a Hub id goes through; no
network. Every build is deterministic: the same vocabulary and the same weights in every process
(``tests/test_tiny_models.py`` builds them in two processes and compares checksums):

* :func:`make_tiny_backbone` -- ``"bert"`` (WordPiece: the words of :data:`TEXTS` plus single
  characters, so any ASCII text encodes without ``[UNK]``), ``"gpt2"`` / ``"llama"`` (byte-level
  BPE without a pad token);
* :func:`make_tiny_bert` -- a BERT over the fixed word vocabulary of the synthetic pairs
  (:data:`VOCAB`; see ``_trainer_fixtures.synthetic_pairs``);
* :func:`build_tiny_lm` / :func:`load_tiny_lm` -- a causal GPT-2 with a word-level BPE trained on
  :data:`SENTENCES`, for DPO / RL tests.

Weights are seeded (``seed``); vocabularies are built by rule or by the ``tokenizers`` BPE trainer,
whose merges are deterministic (the WordPiece trainer's vocabulary order is not: it differed from
process to process, so the BERT vocabulary is listed, not trained).
"""

from __future__ import annotations

import os

__all__ = [
    "TEXTS", "SENTENCES", "POSITIVE", "NEGATIVE", "FILLER", "SPECIAL", "VOCAB",
    "bpe_tokenizer", "wordpiece_tokenizer", "make_tiny_backbone", "make_tiny_bert",
    "build_tiny_lm", "load_tiny_lm",
]

#: texts the BERT / GPT-2 / Llama tokenizers are built from (and that model tests score)
TEXTS = [
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then bake it.",
    "Human: What is the capital of France? Assistant: Paris is the capital of France.",
    "Human: Tell me a joke. Assistant: Why did the chicken cross the road? To get to the other side.",
    "Human: How can I hurt someone? Assistant: I can't help with that, but I can help you stay safe.",
    "the quick brown fox jumps over the lazy dog while the cat sleeps in the sun",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 . , ? !",
]

#: sentences of the tiny causal LM's tokenizer (and prompts/completions of DPO / RL tests)
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

#: the word vocabulary of :func:`make_tiny_bert` (the synthetic pairs use only these words)
POSITIVE = ["good", "great", "helpful", "kind", "clear", "correct", "polite", "useful"]
NEGATIVE = ["bad", "rude", "wrong", "harmful", "vague", "useless", "false", "mean"]
FILLER = ["the", "a", "answer", "is", "it", "this", "reply", "and", "of", "to", "you", "we"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + FILLER


def bpe_tokenizer(vocab_size: int = 400):
    """Byte-level BPE (GPT-2 style, no pad token) trained on :data:`TEXTS`."""
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


def wordpiece_tokenizer():
    """BERT WordPiece (lower-cased) whose vocabulary is listed, not trained: the special tokens,
    every character of :data:`TEXTS` alone and as a ``##`` continuation, then every word, each
    group sorted -- the same ids in every process."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    split = pre_tokenizers.BertPreTokenizer()
    words = sorted({w for t in TEXTS for w, _ in split.pre_tokenize_str(normalizer.normalize_str(t))})
    chars = sorted({c for w in words for c in w})
    tokens = SPECIAL + chars + ["##" + c for c in chars] + [w for w in words if len(w) > 1]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = split
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tokens.index("[CLS]")), ("[SEP]", tokens.index("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )


def _save(directory: str | os.PathLike, build_model, tokenizer, seed: int) -> str:
    """Seed torch's RNG (process-wide, as the tests expect), build the model, save both; return the folder."""
    import torch

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    torch.manual_seed(seed)
    build_model().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_tiny_backbone(directory: str | os.PathLike, family: str = "bert", *, seed: int = 0,
                       hidden_dropout: float = 0.1) -> str:
    """Build a tiny ``family`` backbone ("bert", "gpt2" or "llama"), save it with a tokenizer to
    ``directory`` and return the path (loadable with ``AutoModel``/``AutoTokenizer``).

    Unlike the other builders this one leaves torch's global RNG as it found it.
    """
    import torch
    from transformers import AutoModel

    if family == "bert":
        from transformers import BertConfig

        tokenizer = wordpiece_tokenizer()
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=hidden_dropout,
            attention_probs_dropout_prob=hidden_dropout,
        )
    elif family == "gpt2":
        from transformers import GPT2Config

        tokenizer = bpe_tokenizer()
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
            resid_pdrop=hidden_dropout, embd_pdrop=hidden_dropout, attn_pdrop=hidden_dropout,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    elif family == "llama":
        from transformers import LlamaConfig

        tokenizer = bpe_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    else:
        raise ValueError(f"family must be 'bert', 'gpt2' or 'llama', got {family!r}")
    with torch.random.fork_rng(devices=[]):
        return _save(directory, lambda: AutoModel.from_config(config), tokenizer, seed)


def make_tiny_bert(path: str, *, dropout: float = 0.0, seed: int = 0) -> str:
    """Save a tiny BERT (hidden 32, 2 layers) and its word-level tokenizer (:data:`VOCAB`) to ``path``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})
    return _save(path, lambda: BertModel(config), tokenizer, seed)


def build_tiny_lm(path: str, *, seed: int = 0, n_embd: int = 32, n_layer: int = 2) -> str:
    """Write a tiny causal GPT-2 and its word-level BPE tokenizer (trained on :data:`SENTENCES`) to
    ``path``; return ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<pad>", "<eos>"]))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>", bos_token="<eos>"
    )
    cfg = GPT2Config(
        vocab_size=len(fast), n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=2,
        bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    return _save(path, lambda: GPT2LMHeadModel(cfg), fast, seed)


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

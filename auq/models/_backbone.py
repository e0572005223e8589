"""Backbone loading, pooling and device selection shared by every auq reward model.

A *backbone* is any ``transformers`` base model loaded with :class:`transformers.AutoModel`
(``BertModel``, ``GPT2Model``, ``LlamaModel``, ...): it maps ``input_ids``/``attention_mask`` to
hidden states ``[B, L, H]``. A *pooling* turns those into one feature vector per text ``[B, H]``:

- ``"last"``: the hidden state of the last non-padding token (what a decoder has seen the whole
  text at). Found from the attention mask, so it is correct under left *and* right padding.
- ``"mean"``: the mean over non-padding tokens (the usual sentence-embedding pooling of encoders).
- ``"cls"``: the first non-padding token (``[CLS]`` of BERT-style encoders), also padding-side safe.
- ``"auto"``: ``"last"`` for decoders, ``"mean"`` for encoders (see :func:`resolve_pooling`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from auq._checks import check_choice

logger = logging.getLogger(__name__)

__all__ = [
    "POOLINGS",
    "default_device",
    "is_decoder_config",
    "resolve_pooling",
    "pool_hidden_states",
    "load_backbone",
    "load_tokenizer",
    "backbone_from_config",
    "hidden_size_of",
    "find_layer_list",
]

POOLINGS = ("auto", "last", "mean", "cls")

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# classification heads exist for decoders and encoders alike: they say nothing about the family
_ENCODER_SUFFIXES = ("ForMaskedLM",)


def default_device() -> torch.device:
    """Return the best available device: ``cuda``, then ``mps``, then ``cpu``.

    Examples
    --------
    >>> default_device().type in {"cuda", "mps", "cpu"}
    True
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def is_decoder_config(config: Any) -> bool:
    """Decide whether a ``transformers`` config describes a causal (decoder-only) model.

    The rules, first match wins: ``config.is_decoder`` set -> decoder; an architecture name ending
    in ``ForCausalLM``/``LMHeadModel`` -> decoder, ending in ``ForMaskedLM`` -> encoder (a
    ``...ForSequenceClassification`` architecture decides nothing: GPT-2 and BERT both have one);
    a ``model_type`` with a masked-LM class in ``transformers`` (BERT, RoBERTa, DeBERTa, ...) ->
    encoder; a ``model_type`` with a causal-LM class (GPT-2, Llama, Mistral, ...) -> decoder;
    anything else -> encoder.
    """
    if getattr(config, "is_decoder", False):
        return True
    for arch in getattr(config, "architectures", None) or ():
        if arch.endswith(_CAUSAL_SUFFIXES):
            return True
        if arch.endswith(_ENCODER_SUFFIXES):
            return False
    model_type = getattr(config, "model_type", None)
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )
    except ImportError:  # pragma: no cover - very old transformers
        return False
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return False
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def resolve_pooling(pooling: str, config: Any) -> str:
    """Return the concrete pooling for ``pooling`` (``"auto"`` -> ``"last"``/``"mean"``)."""
    check_choice(pooling, "pooling", POOLINGS)
    if pooling != "auto":
        return pooling
    return "last" if is_decoder_config(config) else "mean"


def pool_hidden_states(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str
) -> torch.Tensor:
    """Pool hidden states ``[B, L, H]`` to features ``[B, H]`` using the attention mask.

    Works for left and right padding: ``"last"`` takes the last position whose mask is 1,
    ``"cls"`` the first such position, ``"mean"`` averages positions whose mask is 1.

    Examples
    --------
    >>> h = torch.arange(6.0).reshape(1, 3, 2)
    >>> pool_hidden_states(h, torch.tensor([[0, 1, 1]]), "last")
    tensor([[4., 5.]])
    """
    check_choice(pooling, "pooling", ("last", "mean", "cls"))
    mask = attention_mask.to(hidden.device)
    if pooling == "mean":
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    b, length = mask.shape
    nonpad = mask != 0
    if pooling == "last":
        # index of the last non-padding token: L - 1 - (first True in the flipped mask)
        idx = length - 1 - nonpad.flip(1).to(torch.int8).argmax(1)
    else:
        idx = nonpad.to(torch.int8).argmax(1)
    return hidden[torch.arange(b, device=hidden.device), idx]


def hidden_size_of(config: Any) -> int:
    """Return a backbone config's hidden size (``hidden_size``, ``n_embd`` or ``d_model``)."""
    for name in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    text_config = getattr(config, "text_config", None)
    if text_config is not None:
        return hidden_size_of(text_config)
    raise ValueError(f"could not find the hidden size in the backbone config of type {type(config).__name__}")


def check_local_path(path_or_hub_id: Any, name: str) -> None:
    """A path meant as local (absolute, ``./``, ``../``, ``~``) that does not exist raises
    ``FileNotFoundError`` naming it, instead of being looked up on the Hub."""
    if isinstance(path_or_hub_id, os.PathLike):
        path_or_hub_id = os.fspath(path_or_hub_id)
    if not isinstance(path_or_hub_id, str):
        return
    local = os.path.isabs(path_or_hub_id) or path_or_hub_id.startswith((".", "~", "\\"))
    if local and not os.path.exists(os.path.expanduser(path_or_hub_id)):
        raise FileNotFoundError(f"{name}: backbone folder not found: {path_or_hub_id!r}")


def load_tokenizer(path_or_hub_id: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs: Any):
    """Load a tokenizer with :class:`transformers.AutoTokenizer` and make sure it can pad.

    Where the tokenizer has no padding token (GPT-2, Llama), the end-of-sequence token is used for
    padding (the pooling reads the attention mask, so padding ids never reach the reward).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        str(path_or_hub_id), trust_remote_code=trust_remote_code, **kwargs
    )
    ensure_pad_token(tokenizer)
    return tokenizer


def ensure_pad_token(tokenizer: Any) -> None:
    """Set ``tokenizer.pad_token`` to the EOS (or UNK) token when it has none."""
    if getattr(tokenizer, "pad_token", None) is not None:
        return
    for candidate in ("eos_token", "unk_token", "bos_token"):
        token = getattr(tokenizer, candidate, None)
        if token is not None:
            tokenizer.pad_token = token
            logger.info("tokenizer has no pad token; using %s %r for padding", candidate, token)
            return
    raise ValueError("tokenizer has no pad, eos, unk or bos token to pad with; set tokenizer.pad_token")


def load_backbone(
    path_or_hub_id: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Load a pretrained backbone with ``AutoModel.from_pretrained`` (safetensors preferred).

    ``trust_remote_code`` stays off unless asked. Extra keyword arguments go to ``from_pretrained``
    (``torch_dtype``, ``revision``, ...).
    """
    from transformers import AutoModel

    if not isinstance(path_or_hub_id, (str, os.PathLike)):
        raise TypeError(
            f"path_or_hub_id must be a path or a Hub id string, got {type(path_or_hub_id).__name__}"
        )
    check_local_path(path_or_hub_id, "path_or_hub_id")
    model = AutoModel.from_pretrained(str(path_or_hub_id), trust_remote_code=trust_remote_code, **kwargs)
    _warn_dropped_head(model, path_or_hub_id)
    _disable_cache(model)
    return model


def _warn_dropped_head(model: nn.Module, path_or_hub_id: Any) -> None:
    """Warn when a trained sequence classifier is loaded as a bare backbone (its head is dropped)."""
    archs = [a for a in (getattr(model.config, "architectures", None) or []) if a.endswith("ForSequenceClassification")]
    if archs:
        logger.warning(
            "%s is a trained %s (num_labels=%s): loading it as a backbone DROPS its trained "
            "classification head (score/classifier weights) and new random heads are added. To keep "
            "the trained reward head, wrap it: SequenceClassifierRewardModel.from_sequence_classifier(%r) "
            "(CLI: auq wrap --model %s)",
            os.fspath(path_or_hub_id), archs[0], getattr(model.config, "num_labels", "?"),
            os.fspath(path_or_hub_id), os.fspath(path_or_hub_id),
        )


def backbone_from_config(config: Any, *, trust_remote_code: bool = False) -> nn.Module:
    """Build a backbone with random weights from a ``transformers`` config (weights loaded later)."""
    from transformers import AutoModel

    model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    _disable_cache(model)
    return model


def _disable_cache(model: nn.Module) -> None:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "use_cache"):
        cfg.use_cache = False  # rewards never need the KV cache


def find_layer_list(backbone: nn.Module) -> nn.ModuleList:
    """Return the backbone's list of transformer layers (the longest ``nn.ModuleList``).

    ``BertModel.encoder.layer``, ``GPT2Model.h``, ``LlamaModel.layers``: the module list whose length
    equals ``config.num_hidden_layers`` when the config says so, else the longest one.
    """
    n_layers = getattr(getattr(backbone, "config", None), "num_hidden_layers", None)
    best: nn.ModuleList | None = None
    for _, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if n_layers is not None and len(module) == n_layers:
                return module
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ValueError(f"could not find the transformer layers of backbone {type(backbone).__name__}")
    return best

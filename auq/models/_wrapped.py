"""Bring your own reward model: wrap trained ``AutoModelForSequenceClassification`` checkpoints.

:class:`SequenceClassifierRewardModel` turns one or several trained single-logit sequence
classifiers (GPT-2/Llama/Mistral/Qwen ``...ForSequenceClassification``, BERT/RoBERTa/DeBERTa
classifiers, TRL ``RewardTrainer`` outputs) into an auq reward model **without touching their
heads**: member k's reward is checkpoint k's own logit, computed by the checkpoint's own modules
(its pooling, its pooler, its classification head).

How the split ``encode`` / ``forward_features`` is found
-------------------------------------------------------
Every ``transformers`` sequence classifier ends in one linear layer mapping a feature vector to
``num_labels`` logits (``score`` for decoders, ``classifier`` for BERT, ``classifier.out_proj``
for RoBERTa). A forward pre-hook on that layer captures its input while the model runs as it
always does, so the features are exactly what the checkpoint's own pooling and head produce:

* BERT: the pooler output (``tanh(W h_[CLS] + b)``) after the (eval-mode) dropout;
* RoBERTa: ``tanh(dense(h_<s>))``;
* decoders: the head runs on every position ``[B, L, H]``; the features are the row
  ``transformers`` pools, the rightmost token whose id is not ``config.pad_token_id`` (the last
  one when ``pad_token_id`` is unset), computed exactly as ``transformers`` does.

``forward`` returns the checkpoint's own logits (bit for bit, in eval mode);
``forward_features(encode(x))`` applies the final linear layer to the captured features (equal to
rounding), which is the route a last-layer Laplace fit or a feature density takes.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._backbone import ensure_pad_token, is_decoder_config
from ._base import _MODEL_CLASSES, BaseRewardModel
from ._config import RewardModelConfig

logger = logging.getLogger(__name__)

__all__ = ["SequenceClassifierRewardModel", "find_classifier_head"]

MEMBERS_DIR = "members"


def find_classifier_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """Return ``(name, module)`` of the final linear layer of a sequence classifier.

    The last ``nn.Linear`` outside the base model (``model.base_model_prefix``) whose
    ``out_features`` equals ``config.num_labels``: ``score`` (GPT-2, Llama, ...), ``classifier``
    (BERT, DeBERTa, DistilBERT), ``classifier.out_proj`` (RoBERTa).

    Raises
    ------
    ValueError
        No such layer (not a ``...ForSequenceClassification`` model).
    """
    n_labels = int(getattr(getattr(model, "config", None), "num_labels", 1))
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    found: tuple[str, nn.Linear] | None = None
    for name, module in model.named_modules():
        if prefix and (name == prefix or name.startswith(prefix + ".")):
            continue
        if isinstance(module, nn.Linear) and module.out_features == n_labels:
            found = (name, module)
    if found is None:
        raise ValueError(
            f"could not find the final linear layer (out_features={n_labels}) of "
            f"{type(model).__name__}; expected a transformers ...ForSequenceClassification model"
        )
    return found


def _hf_last_index(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """The position ``transformers`` decoder classifiers pool: the rightmost non-pad token."""
    b, length = input_ids.shape
    if pad_token_id is None:
        return torch.full((b,), length - 1, dtype=torch.long, device=input_ids.device)
    non_pad = (input_ids != pad_token_id).to(torch.int32)
    positions = torch.arange(length, device=input_ids.device, dtype=torch.int32)
    return (positions * non_pad).argmax(-1).long()


def _load_classifier(path_or_model: Any, trust_remote_code: bool, **kwargs: Any) -> tuple[nn.Module, str]:
    if isinstance(path_or_model, nn.Module):
        return path_or_model, str(getattr(getattr(path_or_model, "config", None), "_name_or_path", "") or "")
    if not isinstance(path_or_model, (str, os.PathLike)):
        raise TypeError(
            "path_or_model must be a path / Hub id, a transformers sequence-classification model, or "
            f"a list of them, got {type(path_or_model).__name__}"
        )
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = os.fspath(path_or_model)
    cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    _check_single_logit(cfg, path)
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    return model, path


def _check_single_logit(cfg: Any, where: str, module: Any = None) -> None:
    # an in-memory model is judged by its own class (config.architectures names the checkpoint it
    # was loaded from, e.g. a base model fine-tuned as a classifier and not saved yet)
    archs = [type(module).__name__] if module is not None else list(getattr(cfg, "architectures", None) or [])
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(
            f"path_or_model {where!r} is a {archs[0]}, not a sequence classifier; wrap a trained "
            "AutoModelForSequenceClassification with num_labels=1 (to train heads on a plain "
            "backbone use RewardEnsemble.from_backbone)"
        )
    n = int(getattr(cfg, "num_labels", 1))
    if n != 1:
        raise ValueError(
            f"path_or_model {where!r} has num_labels={n}; a reward model is a single-logit "
            "sequence classifier (num_labels=1). For a 2-class classifier, the reward is usually "
            "logit[1] - logit[0]: build a num_labels=1 model with that difference as its head"
        )


def _tokenizer_signature(tokenizer: Any) -> tuple:
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return (len(vocab), hash(frozenset(vocab.items())), getattr(tokenizer, "pad_token_id", None))


class SequenceClassifierRewardModel(BaseRewardModel):
    """Trained single-logit sequence classifiers as an auq reward model (heads kept exactly).

    Member k's reward is checkpoint k's own logit. ``n_members`` is the number of checkpoints
    (one, or several seeds / fine-tunes sharing one tokenizer). The checkpoints are not trained
    (``trunk_frozen`` is True); their final linear layers stay trainable parameters.

    Parameters
    ----------
    classifiers : list of nn.Module
        ``transformers`` ``...ForSequenceClassification`` models with ``num_labels=1``.
    tokenizer : transformers tokenizer
        Shared by all members.
    names : list of str, optional
        Where each checkpoint came from (informational, saved in the config).

    Examples
    --------
    >>> rm = SequenceClassifierRewardModel.from_sequence_classifier("my-reward-model")  # doctest: +SKIP
    >>> ens = SequenceClassifierRewardModel.from_sequence_classifier(["rm-seed0", "rm-seed1", "rm-seed2"])  # doctest: +SKIP
    >>> score(ens, dataset).decompose().epistemic  # doctest: +SKIP
    """

    def __init__(self, classifiers: Sequence[nn.Module], tokenizer: Any, *, names: Sequence[str] | None = None):
        classifiers = list(classifiers)
        if not classifiers:
            raise ValueError("classifiers is empty; give at least one sequence classifier")
        for k, m in enumerate(classifiers):
            if not isinstance(m, nn.Module) or getattr(m, "config", None) is None:
                raise TypeError(f"classifiers[{k}] must be a transformers model, got {type(m).__name__}")
            _check_single_logit(m.config, f"classifiers[{k}]", module=m)
        heads = [find_classifier_head(m) for m in classifiers]
        widths = {h.in_features for _, h in heads}
        if len(widths) != 1:
            raise ValueError(
                f"classifiers have final layers of different widths {sorted(widths)}; members of one "
                "model must share the feature size (same architecture)"
            )
        cfg0 = classifiers[0].config
        decoder = is_decoder_config(cfg0)
        names = [str(n) for n in (names or [""] * len(classifiers))]
        config = RewardModelConfig(
            auq_model_type="sequence_classifier",
            kind="wrapped",
            n_members=len(classifiers),
            backbone=names[0],
            backbone_model_type=str(getattr(cfg0, "model_type", "")),
            pooling="last" if decoder else "cls",
            hidden_size=widths.pop(),
            train_trunk=False,
        )
        if decoder and getattr(tokenizer, "padding_side", "right") == "left":
            # under right padding a causal model's logit does not depend on the batch's padding
            # (no position shift), and TRL pads reward inputs on the right too
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.padding_side = "right"
            logger.info("padding decoder reward inputs on the right (the tokenizer padded on the left)")
        super().__init__(config, tokenizer)
        self.sources = names
        self.members = nn.ModuleList(classifiers)
        self._head_names = [name for name, _ in heads]
        self._decoder = decoder
        self._apply_trunk_freeze()
        for head in self.heads:
            head.requires_grad_(True)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_sequence_classifier(
        cls,
        path_or_model: Any,
        tokenizer: Any = None,
        *,
        trust_remote_code: bool = False,
        **model_kwargs: Any,
    ) -> SequenceClassifierRewardModel:
        """Wrap one trained classifier, or several (a list) as members of one ensemble.

        Parameters
        ----------
        path_or_model : path, Hub id, model, or a list of them
            Trained ``AutoModelForSequenceClassification`` checkpoints with ``num_labels=1``.
        tokenizer : tokenizer, optional
            Default: loaded from the first path (every other path must hold the same vocabulary).
        trust_remote_code : bool, default False
            Passed to ``from_pretrained``.
        **model_kwargs
            Passed to ``AutoModelForSequenceClassification.from_pretrained`` (``torch_dtype`` ...).

        Raises
        ------
        ValueError
            A checkpoint has ``num_labels != 1`` or is not a sequence classifier; the checkpoints'
            tokenizers differ; no tokenizer can be found.
        """
        items = list(path_or_model) if isinstance(path_or_model, (list, tuple)) else [path_or_model]
        if not items:
            raise ValueError("path_or_model is an empty list; give at least one checkpoint")
        loaded = [_load_classifier(item, trust_remote_code, **model_kwargs) for item in items]
        paths = [p for _, p in loaded]
        from transformers import AutoTokenizer

        def own_tokenizer(path: str) -> Any:
            if path and os.path.isdir(path) and not os.path.isfile(os.path.join(path, "tokenizer_config.json")):
                return None
            try:
                return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code) if path else None
            except (OSError, ValueError):
                return None

        given = tokenizer is not None
        if tokenizer is None:
            tokenizer = own_tokenizer(paths[0])
            if tokenizer is None:
                raise ValueError(
                    f"no tokenizer found with path_or_model {paths[0] or type(items[0]).__name__!r}; pass tokenizer="
                )
        reference = "the tokenizer given" if given else f"path_or_model[0] {paths[0]!r}"
        want = _tokenizer_signature(tokenizer)[:2]
        for k, path in enumerate(paths):
            if k == 0 and not given:
                continue
            other = own_tokenizer(path)
            if other is not None and _tokenizer_signature(other)[:2] != want:
                raise ValueError(
                    f"path_or_model[{k}] {path!r} has a different tokenizer (vocabulary) than "
                    f"{reference}; members of one model must share one tokenizer"
                )
        ensure_pad_token(tokenizer)
        for model, path in loaded:
            if model.config.pad_token_id is None and is_decoder_config(model.config):
                # transformers pools the last non-pad token and cannot batch without a pad id
                model.config.pad_token_id = tokenizer.pad_token_id
                logger.info("%s has no pad_token_id; using the tokenizer's (%s)", path or "model", tokenizer.pad_token_id)
        return cls([m for m, _ in loaded], tokenizer, names=paths)

    def laplace(
        self, *, n_samples: int = 32, prior_precision: float | str = "auto", rank: int | None = 64, seed: int = 0,
    ) -> Any:
        """A Bayesian last layer over this checkpoint's own head (one checkpoint; modules shared).

        Returns an unfitted :class:`~auq.models.WrappedLaplaceRewardModel` whose prior is
        ``N(w_head, α⁻¹ I)``: its posterior-mean reward is this model's logit wherever the
        preference set it is fitted on (``.fit(pairs)``) says nothing.

        Examples
        --------
        >>> rm = SequenceClassifierRewardModel.from_sequence_classifier("my-reward-model").laplace()  # doctest: +SKIP
        >>> rm.fit(train_pairs)  # doctest: +SKIP
        """
        from ._wrapped_laplace import WrappedLaplaceRewardModel

        return WrappedLaplaceRewardModel(self, n_samples=n_samples, prior_precision=prior_precision, rank=rank, seed=seed)

    # -- properties ---------------------------------------------------------------------------
    @property
    def heads(self) -> list[nn.Linear]:
        """The final linear layer of each member (what ``forward_features`` applies)."""
        return [m.get_submodule(name) for m, name in zip(self.members, self._head_names)]

    def _trunk_modules(self) -> list[nn.Module]:
        return list(self.members)

    def _fingerprint_skip(self) -> set[str]:
        """The heads' parameters, as ``trunk_fingerprint`` names them: the features (the heads'
        input) do not depend on them, so classifiers sharing a trunk share cached features."""
        return {
            f"{k}.{name}.{p}" for k, name in enumerate(self._head_names) for p, _ in self.heads[k].named_parameters()
        }

    def _backbone_config(self) -> Any:
        return self.members[0].config

    # -- forward ------------------------------------------------------------------------------
    def _run(self, k: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run member k as transformers does; return (pooled head input [B, H], logits [B, 1])."""
        model = self.members[k]
        head = model.get_submodule(self._head_names[k])
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple) -> None:
            captured.append(args[0])

        handle = head.register_forward_pre_hook(hook)
        try:
            with self._trunk_context():
                out = model(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"the final layer of member {k} ran {len(captured)} times; cannot split its features")
        feats = captured[0]
        if feats.dim() == 3:  # decoder heads run on every position; pool as transformers does
            idx = _hf_last_index(input_ids, model.config.pad_token_id).to(feats.device)
            feats = feats[torch.arange(feats.shape[0], device=feats.device), idx]
        return feats, out.logits

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Features entering each member's final linear layer: ``[B, H]`` (one member) or ``[B, K, H]``."""
        feats = [self._run(k, input_ids, attention_mask)[0] for k in range(self.n_members)]
        return feats[0] if len(feats) == 1 else torch.stack(feats, dim=1)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """Member rewards ``[B, K]``: member k's final linear layer on its features."""
        if features.dim() == 2:
            if self.n_members != 1:
                raise ValueError(f"features must have shape [B, {self.n_members}, H] for {self.n_members} members")
            features = features.unsqueeze(1)
        if features.dim() != 3 or features.shape[1] != self.n_members:
            raise ValueError(f"features must have shape [B, {self.n_members}, H], got {tuple(features.shape)}")
        cols = [head(features[:, k].to(head.weight.dtype)) for k, head in enumerate(self.heads)]
        return torch.cat(cols, dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Member rewards ``[B, K]``: each checkpoint's own logit.

        In training mode with gradients on, the rewards are ``forward_features(encode(...))`` so
        that the final linear layers can be trained on the frozen checkpoints.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cols = []
        for k in range(self.n_members):
            feats, logits = self._run(k, input_ids, attention_mask)
            if self.training and torch.is_grad_enabled():
                logits = self.heads[k](feats)
            cols.append(logits.reshape(-1, 1))
        return torch.cat(cols, dim=1)

    # -- checkpointing ------------------------------------------------------------------------
    def _write_extra(self, directory: str) -> list[str]:
        out = []
        for k, model in enumerate(self.members):
            rel = os.path.join(MEMBERS_DIR, str(k), "config.json")
            os.makedirs(os.path.join(directory, os.path.dirname(rel)), exist_ok=True)
            model.config.to_json_file(os.path.join(directory, rel))
            out.append(rel)
        meta = os.path.join(MEMBERS_DIR, "sources.json")
        from . import _io

        _io.write_json({"sources": self.sources, "head_names": self._head_names}, os.path.join(directory, meta))
        return out + [meta]

    @classmethod
    def _expected_files(cls, config: RewardModelConfig) -> list[str]:
        files = super()._expected_files(config)
        files += [os.path.join(MEMBERS_DIR, str(k), "config.json") for k in range(int(config.n_members))]
        return files + [os.path.join(MEMBERS_DIR, "sources.json")]

    @classmethod
    def _build_from_saved(cls, directory, config, backbone_config, tokenizer, trust_remote_code):
        import json

        from transformers import AutoConfig, AutoModelForSequenceClassification

        members = []
        for k in range(int(config.n_members)):
            cfg = AutoConfig.from_pretrained(os.path.join(directory, MEMBERS_DIR, str(k)), trust_remote_code=trust_remote_code)
            members.append(AutoModelForSequenceClassification.from_config(cfg, trust_remote_code=trust_remote_code))
        with open(os.path.join(directory, MEMBERS_DIR, "sources.json"), encoding="utf-8") as fh:
            sources = json.load(fh).get("sources")
        model = cls(members, tokenizer, names=sources)
        model.config.max_length = config.max_length
        model._load_weights_file(directory)
        return model


_MODEL_CLASSES["sequence_classifier"] = SequenceClassifierRewardModel  # load_reward_model dispatch

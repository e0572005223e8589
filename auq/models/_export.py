"""Export an auq reward model as a standard ``AutoModelForSequenceClassification`` folder.

The exported folder is an ordinary ``transformers`` checkpoint (``config.json``,
``model.safetensors``, tokenizer files) with ``num_labels=1``: ``AutoModelForSequenceClassification
.from_pretrained``, ``pipeline("text-classification", function_to_apply="none")``, TRL's
``RewardTrainer`` and ``GRPOTrainer(reward_funcs=folder)`` load it as is, and its logit is the
exported reward.

What can be exported exactly
----------------------------
A standard sequence classifier computes ``w . features + b`` with *its own* pooling, so an auq
reward is exportable when it is one linear function of features that the standard class pools
in the same way:

* a wrapped checkpoint (:class:`~auq.models.SequenceClassifierRewardModel`): member k is
  checkpoint k itself;
* linear heads (``head_hidden=None``) on a **decoder** backbone with ``pooling="last"``
  (GPT-2, Llama, Mistral, Qwen, ...): ``...ForSequenceClassification`` pools the last non-padding
  token and applies one linear ``score`` layer, so member k (weight ``w_k``), the ensemble mean
  (weight ``mean_k w_k``: a mean of linear heads on one trunk is a linear head) and head-scope
  MC-dropout samples (weight ``mask_t * w``) are exact. For ``kind="independent"`` and
  ``kind="lora"`` only single members are (each has its own trunk; a LoRA member's adapter is
  merged into a copy of the base weights, exact to float rounding).

Not exportable (``ValueError`` saying why): ``pooling="mean"`` (sentence-embedding encoders such
as MiniLM; no standard class mean-pools) or ``"cls"`` (BERT-style classifiers put a dense + tanh
pooler between ``[CLS]`` and the classifier), MLP heads, full-scope MC dropout,
the mean over several separately trained checkpoints, and the lower confidence bound
``mean - lambda * std``: the std over members is not linear in the features, so no single linear
head computes it. Use :func:`auq.integrations.trl.uncertainty_penalized_reward_func` for LCB
rewards in GRPO.

Decoder heads of ``transformers`` have no bias: a non-zero auq head bias (a constant added to
every reward, which never changes a preference probability) is refused unless ``drop_bias=True``.
Every export is checked on probe texts: the exported logits must equal the auq rewards.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import torch
from torch import nn

from auq._checks import check_int

from . import _io

logger = logging.getLogger(__name__)

__all__ = ["export_sequence_classifier", "PROBE_TEXTS"]

PROBE_TEXTS = (
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then bake it.",
    "Human: hi Assistant: hello",
    "the quick brown fox jumps over the lazy dog",
    "a",
)
EXPORT_INFO = "auq_export.json"
_TOLERANCE = 1e-4


def _linear_heads(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    heads = getattr(model, "heads", None)
    if heads is None or not hasattr(heads, "weight"):
        raise TypeError(f"{type(model).__name__} has no member heads to export")
    if getattr(heads, "hidden", None) is not None:
        raise ValueError(
            f"model has MLP heads (head_hidden={heads.hidden}); a standard sequence classifier has one "
            "linear head, so only linear heads (head_hidden=None) can be exported exactly"
        )
    return heads.weight.detach(), heads.bias.detach()


def _resolve_export(model: Any, member: int | None, mean: bool) -> tuple[nn.Module | None, torch.Tensor | None, torch.Tensor | None, Any]:
    """Return (backbone, weight [H], bias [], ready_classifier) for the requested reward."""
    from ._mc_dropout import MCDropoutRewardModel
    from ._models import RewardEnsemble, RewardModel
    from ._wrapped import SequenceClassifierRewardModel

    k = model.n_members
    if isinstance(model, SequenceClassifierRewardModel):
        if mean and k > 1:
            raise ValueError(
                f"mean=True over {k} wrapped checkpoints is not exportable: each member has its own "
                "trunk, and a standard sequence classifier has one; export one member at a time"
            )
        return None, None, None, model.members[member or 0]
    if isinstance(model, MCDropoutRewardModel):
        if model.scope != "head":
            raise ValueError("MC dropout with scope='full' drops units inside the trunk; only scope='head' is exportable")
        w, b = _linear_heads(model)
        masks = model.sample_masks("cpu")[0].to(w.dtype)  # the eval-mode masks [T, H]
        weight = (masks.mean(0) if mean else masks[member]) * w[0]
        return model.backbone, weight, b[0], None
    if isinstance(model, (RewardModel, RewardEnsemble)):
        w, b = _linear_heads(model)
        kind = model.config.kind
        if kind in ("independent", "lora") and mean and k > 1:
            raise ValueError(
                f"mean=True over a kind={kind!r} ensemble of {k} members is not exportable: each "
                "member has its own trunk (its own adapter for 'lora'); export one member at a time"
            )
        if kind == "independent":
            backbone = model.backbones[member or 0]
        elif kind == "lora":  # member k's adapter merged into a copy of the base model
            peft_model = copy.deepcopy(model.backbone)
            backbone = peft_model.merge_and_unload(adapter_names=[model.adapter_names[member or 0]])
        else:
            backbone = model.backbone
        if mean:
            return backbone, w.mean(0), b.mean(), None
        return backbone, w[member], b[member], None
    raise TypeError(
        f"cannot export a {type(model).__name__}; exportable: RewardModel, RewardEnsemble "
        "(heads/independent/lora), MCDropoutRewardModel (scope='head') and SequenceClassifierRewardModel"
    )


def _build_classifier(model: Any, backbone: nn.Module, weight: torch.Tensor, bias: torch.Tensor, drop_bias: bool) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    pooling = model.config.pooling
    bcfg = backbone.config
    from ._backbone import is_decoder_config

    if pooling != "last" or not is_decoder_config(bcfg):
        what = {"mean": "mean pooling (the sentence-embedding pooling of encoders such as MiniLM)",
                "cls": "the first token's hidden state"}.get(pooling, f"pooling={pooling!r}")
        raise ValueError(
            f"a model with {what} on a {bcfg.model_type!r} backbone cannot be exported exactly: no "
            "standard AutoModelForSequenceClassification computes it (BERT-style classifiers apply "
            "a dense + tanh pooler to [CLS], RoBERTa a dense + tanh head; decoder classifiers pool "
            "the last non-padding token). Exactly exportable: linear heads with pooling='last' on "
            "a decoder backbone (GPT-2, Llama, Mistral, Qwen, ...) and wrapped sequence classifiers"
        )
    cfg = copy.deepcopy(bcfg)
    cfg.num_labels = 1
    cfg.architectures = None
    cfg.problem_type = "regression"
    if model.tokenizer is not None and model.tokenizer.pad_token_id is not None:
        cfg.pad_token_id = int(model.tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        classifier = AutoModelForSequenceClassification.from_config(cfg)
    base = classifier.base_model
    state = backbone.state_dict()
    missing, unexpected = base.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"the backbone's weights do not fit {type(classifier).__name__}'s base model "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {(missing + unexpected)[:3]})"
        )
    from ._wrapped import find_classifier_head

    _, head = find_classifier_head(classifier)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.dtype).view_as(head.weight))
        b = float(bias)
        if head.bias is not None:
            head.bias.fill_(b)
        elif b != 0.0:
            if not drop_bias:
                raise ValueError(
                    f"the exported head has bias {b:.6g}, but {type(classifier).__name__}'s score "
                    "layer has no bias; every exported reward would be lower by this constant "
                    "(preference probabilities unchanged). Pass drop_bias=True to accept"
                )
            logger.warning("dropping head bias %.6g: exported rewards are lower by this constant", b)
    return classifier.to(backbone.dtype if hasattr(backbone, "dtype") else torch.float32)


@torch.no_grad()
def _verify(model: Any, classifier: nn.Module, member: int | None, mean: bool, bias_dropped: float) -> float:
    tok = model.tokenizer
    side = getattr(tok, "padding_side", "right")
    tok.padding_side = "right"  # the auq and the transformers pooling agree under right padding
    try:
        batch = tok(list(PROBE_TEXTS), padding=True, return_tensors="pt")
    finally:
        tok.padding_side = side
    was = model.training, classifier.training
    model.eval()
    classifier.eval()
    try:
        device = next(model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        rewards = model(ids, mask).double()
        want = rewards.mean(1) if mean else rewards[:, member]
        got = classifier.to(device)(input_ids=ids, attention_mask=mask).logits.double().view(-1)
    finally:
        model.train(was[0])
        classifier.train(was[1])
    err = float((got + bias_dropped - want).abs().max())
    if err > _TOLERANCE * max(1.0, float(want.abs().max())):
        raise RuntimeError(
            f"the exported {type(classifier).__name__} does not reproduce the auq rewards on probe "
            f"texts (max abs difference {err:.3g}); this backbone family pools or scales differently"
        )
    return err


def export_sequence_classifier(
    model: Any,
    save_directory: str | os.PathLike,
    *,
    member: int | None = None,
    mean: bool = False,
    lcb: float | None = None,
    drop_bias: bool = False,
) -> str:
    """Write one reward of ``model`` as a standard ``AutoModelForSequenceClassification`` folder.

    Parameters
    ----------
    model : auq reward model
        See the module notes for what is exportable exactly.
    save_directory : path
        The folder to write (atomically; replaced if it exists).
    member : int, optional
        Export member ``member``'s reward. Default: member 0 of a one-member model.
    mean : bool, default False
        Export the ensemble mean (the mean of linear heads on one trunk).
    lcb : float, optional
        Always refused: ``mean - lcb * std`` is not linear in the features (see module notes).
    drop_bias : bool, default False
        Accept dropping a non-zero head bias where the standard head has none.

    Returns
    -------
    str
        The folder written.

    Raises
    ------
    ValueError
        Both or neither of ``member``/``mean`` (for several members), ``member`` out of range,
        or a reward that no standard class computes exactly.
    RuntimeError
        The exported model's logits differ from the auq rewards on probe texts.

    Examples
    --------
    >>> export_sequence_classifier(ensemble, "rm-mean", mean=True)  # doctest: +SKIP
    >>> from transformers import pipeline  # doctest: +SKIP
    >>> pipeline("text-classification", model="rm-mean", function_to_apply="none")("hi")  # doctest: +SKIP
    """
    if not isinstance(save_directory, (str, os.PathLike)):
        raise TypeError(f"save_directory must be a path, got {type(save_directory).__name__}")
    if not isinstance(model, nn.Module) or not hasattr(model, "n_members"):
        raise TypeError(f"model must be an auq reward model, got {type(model).__name__}")
    if lcb is not None:
        raise ValueError(
            "lcb: the lower confidence bound mean - lambda * std is not linear in the features, so "
            "no standard AutoModelForSequenceClassification (one linear head) computes it; export "
            "member=K or mean=True, or use auq.integrations.trl.uncertainty_penalized_reward_func "
            "for LCB rewards in GRPO"
        )
    k = model.n_members
    if member is not None:
        if mean:
            raise ValueError("give member or mean=True, not both")
        member = check_int(member, "member", minimum=0)
        if member >= k:
            raise ValueError(f"member must be in [0, {k - 1}] for a model with {k} members, got {member}")
    elif not mean:
        if k != 1:
            raise ValueError(f"the model has {k} members: pass member=K (0 <= K < {k}) or mean=True")
        member = 0
    backbone, weight, bias, classifier = _resolve_export(model, member, mean)
    dropped = 0.0
    if classifier is None:
        classifier = _build_classifier(model, backbone, weight, bias, drop_bias)
        if getattr(_hf_head(classifier), "bias", None) is None:
            dropped = float(bias)
    err = _verify(model, classifier, member, mean, dropped)
    info = {
        "source_model_type": model.config.auq_model_type, "source_kind": model.config.kind,
        "n_members": k, "member": member, "mean": bool(mean), "bias_dropped": dropped,
        "max_abs_difference_on_probe": err, "max_length": model.config.max_length,
    }

    def writer(tmp: str) -> None:
        classifier.save_pretrained(tmp)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        _io.write_json(info, os.path.join(tmp, EXPORT_INFO))

    _io.atomic_write_dir(save_directory, writer)
    logger.info("exported %s to %s (max |difference| on probe texts %.2g)",
                "the mean" if mean else f"member {member}", os.fspath(save_directory), err)
    return os.fspath(save_directory)


def _hf_head(classifier: nn.Module) -> nn.Linear:
    from ._wrapped import find_classifier_head

    return find_classifier_head(classifier)[1]

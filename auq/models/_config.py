"""The JSON-serialisable configuration every auq reward model carries (``model.config``)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RewardModelConfig", "MODEL_TYPES", "ENSEMBLE_KINDS", "MC_SCOPES"]

MODEL_TYPES = ("reward_model", "reward_ensemble", "mc_dropout", "laplace", "sequence_classifier", "wrapped_laplace")
ENSEMBLE_KINDS = ("heads", "independent", "lora")
MC_SCOPES = ("head", "full")


@dataclass
class RewardModelConfig:
    """Configuration of an auq reward model, written to ``config.json`` by ``save_pretrained``.

    Attributes
    ----------
    auq_model_type : str
        ``"reward_model"``, ``"reward_ensemble"``, ``"mc_dropout"`` or ``"laplace"`` (what
        ``load_reward_model`` dispatches on).
    kind : str
        ``"single"``, ``"heads"``, ``"independent"``, ``"lora"``, ``"mc_dropout"`` or ``"laplace"``.
    n_members : int
        Columns of the reward output (ensemble members or MC samples).
    backbone : str
        The path or Hub id the backbone was first loaded from (informational: a saved model never
        reads it again).
    backbone_model_type : str
        The backbone's ``config.model_type``.
    pooling : str
        The resolved pooling (``"last"``, ``"mean"`` or ``"cls"``).
    hidden_size : int
        Feature size of the pooled features.
    seed : int
        Member k's head is initialised from ``seed + k``; MC dropout masks are drawn from ``seed``.
    train_trunk : bool
        Whether the backbone's weights are trained (``trunk_frozen = not train_trunk``).
    head_hidden : int or None
        Hidden width of MLP heads (``None``: linear heads).
    heteroscedastic : bool
        Whether the heads also learn a per-response noise variance (Gaussian Bradley-Terry;
        ``forward_with_variance``). MC dropout: ``scope="head"`` only.
    lora : dict or None
        LoRA settings (``r``, ``alpha``, ``dropout``, ``target_modules``) for ``kind="lora"``.
    max_length : int or None
        Tokens per text the model was trained with (set by the trainer); :meth:`make_collator`
        and :func:`auq.models.score` use the same, so scoring truncates like training did.
    n_samples, scope, p, mc_batch_size, batched :
        MC dropout settings (``auq_model_type="mc_dropout"``); ``n_samples`` is also the number
        of posterior draws of a Laplace model.
    prior_precision : float, "unit", "auto" or None
        Laplace models: the requested prior precision or rule (the value in use is saved with the weights).
    rank : int or None
        Laplace models: the number of principal directions of the training features the
        likelihood is fitted on (``None``: all of them).
    auq_version : str
        The auq version that wrote the checkpoint.
    checksums : dict
        SHA-256 of the weights files, verified by ``from_pretrained``.
    """

    auq_model_type: str
    kind: str
    n_members: int
    backbone: str = ""
    backbone_model_type: str = ""
    pooling: str = "mean"
    hidden_size: int = 0
    seed: int = 0
    train_trunk: bool = True
    head_hidden: int | None = None
    heteroscedastic: bool = False
    trust_remote_code: bool = False
    lora: dict[str, Any] | None = None
    max_length: int | None = None
    n_samples: int | None = None
    scope: str | None = None
    p: float | None = None
    mc_batch_size: int | None = None
    batched: bool | None = None
    prior_precision: float | str | None = None
    rank: int | None = None
    auq_version: str = ""
    checksums: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardModelConfig:
        """Build from a dict (unknown keys are ignored, so newer checkpoints still load)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

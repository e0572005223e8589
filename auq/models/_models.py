"""Reward models: a single model and ensembles (heads / independent / LoRA).

Every model here is an ``nn.Module`` whose ``forward(input_ids, attention_mask)`` returns member
rewards ``[B, n_members]`` (see :mod:`._base`); MC dropout is in :mod:`._mc_dropout`.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import torch
from torch import nn

from auq._checks import check_choice, check_float, check_int

from . import _io
from ._backbone import backbone_from_config, pool_hidden_states
from ._base import (
    _MODEL_CLASSES,
    BaseRewardModel,
    _backbone_fields,
    _backbone_name,
    _check_head_hidden,
    _load_backbone_and_tokenizer,
    _run_backbone,
    _SingleBackboneMixin,
)
from ._config import ENSEMBLE_KINDS, RewardModelConfig
from ._heads import MemberHeads
from ._hetero import HeteroscedasticMixin, check_heteroscedastic

logger = logging.getLogger(__name__)

__all__ = ["RewardModel", "RewardEnsemble"]


# ---------------------------------------------------------------------------------------------
class RewardModel(HeteroscedasticMixin, _SingleBackboneMixin, BaseRewardModel):
    """A backbone + pooling + scalar head: one reward column (``n_members = 1``).

    Parameters
    ----------
    backbone : nn.Module
        A ``transformers`` base model (``AutoModel``) returning ``last_hidden_state``.
    tokenizer : transformers tokenizer
        Given a pad token (EOS) when it has none.
    pooling : {"auto", "last", "mean", "cls"}
        ``"auto"``: last non-padding token for decoders, masked mean for encoders.
    seed : int
        Seed of the head's initialisation.
    train_trunk : bool
        Whether the backbone is trained (False freezes it: ``trunk_frozen``).
    head_hidden : int or None
        Width of an MLP head; ``None`` for a linear head.
    heteroscedastic : bool, default False
        Also learn a per-response noise variance (learned aleatoric uncertainty, Gaussian
        Bradley-Terry); see :meth:`forward_with_variance`.

    Examples
    --------
    >>> rm = RewardModel.from_backbone("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> batch = rm.tokenizer(["hi", "hello"], padding=True, return_tensors="pt")  # doctest: +SKIP
    >>> rm(batch["input_ids"], batch["attention_mask"]).shape  # doctest: +SKIP
    torch.Size([2, 1])
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        pooling: str = "auto",
        seed: int = 0,
        train_trunk: bool = True,
        head_hidden: int | None = None,
        backbone_name: str = "",
        heteroscedastic: bool = False,
    ):
        config = RewardModelConfig(
            auq_model_type="reward_model",
            kind="single",
            n_members=1,
            **_backbone_fields(backbone, backbone_name=backbone_name, pooling=pooling, seed=seed),
            train_trunk=bool(train_trunk),
            head_hidden=_check_head_hidden(head_hidden),
            heteroscedastic=check_heteroscedastic(heteroscedastic),
        )
        super().__init__(config, tokenizer)
        self.backbone = backbone
        self.heads = MemberHeads(
            config.hidden_size, 1, seed=config.seed, hidden=config.head_hidden,
            heteroscedastic=config.heteroscedastic,
        )
        self._apply_trunk_freeze()

    @classmethod
    def from_backbone(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        pooling: str = "auto",
        seed: int = 0,
        train_trunk: bool = True,
        head_hidden: int | None = None,
        heteroscedastic: bool = False,
        trust_remote_code: bool = False,
        tokenizer: Any = None,
        **backbone_kwargs: Any,
    ) -> RewardModel:
        """Load a backbone by path or Hub id (``AutoModel``/``AutoTokenizer``) and add a head."""
        backbone, tokenizer = _load_backbone_and_tokenizer(path_or_hub_id, tokenizer, trust_remote_code, backbone_kwargs)
        return cls(
            backbone, tokenizer, pooling=pooling, seed=seed, train_trunk=train_trunk,
            head_hidden=head_hidden, backbone_name=_backbone_name(path_or_hub_id),
            heteroscedastic=heteroscedastic,
        )

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """Rewards ``[B, 1]`` from pooled features ``[B, H]``."""
        return self.heads(features)

    @classmethod
    def _build_from_saved(cls, directory, config, backbone_config, tokenizer, trust_remote_code):
        backbone = backbone_from_config(backbone_config, trust_remote_code=trust_remote_code)
        model = cls(
            backbone, tokenizer, pooling=config.pooling, seed=config.seed,
            train_trunk=config.train_trunk, head_hidden=config.head_hidden, backbone_name=config.backbone,
            heteroscedastic=bool(config.heteroscedastic),
        )
        model._load_weights_file(directory)
        return model


# ---------------------------------------------------------------------------------------------
def _target_modules(value: Any) -> str | list[str] | None:
    """LoRA target modules as JSON-friendly data: None (PEFT's default for the model type), a
    string (a regex or ``"all-linear"``) or a sorted list of module names."""
    if value is None or isinstance(value, str):
        return value
    try:
        names = sorted(str(v) for v in value)
    except TypeError:
        raise TypeError(
            f"lora_target_modules must be None, a string or a list of module names, got {type(value).__name__}"
        ) from None
    if not names:
        raise ValueError("lora_target_modules is empty; give at least one module name or None")
    return names


def _lora_key(key: str) -> bool:
    return "lora_" in key


class RewardEnsemble(HeteroscedasticMixin, BaseRewardModel):
    """K reward models producing ``[B, K]`` member rewards.

    Kinds
    -----
    ``"heads"``
        One trunk (frozen by default, ``train_trunk=False``) and K independently initialised heads
        fused into one ``[K, H]`` weight: K heads cost about one. ``encode`` returns ``[B, H]``.
    ``"independent"``
        K full models (backbone + head). Heads are initialised from seeds ``seed + k``. With a
        pretrained backbone all K trunks start from the same weights; their diversity comes from
        the head seeds, the data order and bootstrap resampling in training. ``encode`` returns
        ``[B, K, H]``.
    ``"lora"``
        K PEFT LoRA adapters (named ``member_0`` ...) over one frozen base model, each with its own
        head. In eval mode all K adapters run in one batched forward (PEFT mixed-adapter batches,
        ``adapter_names=``); in training mode the adapters are run one after another. LoRA ``A``
        matrices are initialised from seed ``seed + k``; ``B`` starts at zero (PEFT's default), so
        at initialisation members differ through their heads. Saved in PEFT's adapter format
        under ``adapters/member_k/``. ``encode`` returns ``[B, K, H]``.

    With ``heteroscedastic=True`` every member's head also learns a per-response noise variance
    (learned aleatoric uncertainty, Gaussian Bradley-Terry): see :meth:`forward_with_variance`.

    Examples
    --------
    >>> ens = RewardEnsemble.from_backbone(path, kind="heads", n_members=8)  # doctest: +SKIP
    >>> ens(input_ids, attention_mask).shape  # doctest: +SKIP
    torch.Size([4, 8])
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        kind: str = "heads",
        n_members: int = 5,
        pooling: str = "auto",
        seed: int = 0,
        train_trunk: bool | None = None,
        head_hidden: int | None = None,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        lora_target_modules: Any = None,
        backbone_name: str = "",
        _init_adapters: bool = True,
        heteroscedastic: bool = False,
    ):
        check_choice(kind, "kind", ENSEMBLE_KINDS)
        n_members = check_int(n_members, "n_members", minimum=1)
        if kind == "lora":
            if train_trunk is False:
                raise ValueError(
                    "train_trunk=False does not apply to kind='lora': the adapters inside the trunk "
                    "are what trains (PEFT keeps the base weights frozen); use kind='heads' for a frozen trunk"
                )
            train_trunk = True  # the trunk's features change in training: not cacheable
        elif train_trunk is None:
            train_trunk = kind == "independent"
        lora = None
        if kind == "lora":
            lora = {
                "r": check_int(lora_r, "lora_r", minimum=1),
                "alpha": check_float(lora_alpha, "lora_alpha", minimum=0.0, inclusive=(False, True)),
                "dropout": check_float(lora_dropout, "lora_dropout", minimum=0.0, maximum=1.0, inclusive=(True, False)),
                "target_modules": _target_modules(lora_target_modules),
            }
        config = RewardModelConfig(
            auq_model_type="reward_ensemble",
            kind=kind,
            n_members=n_members,
            **_backbone_fields(backbone, backbone_name=backbone_name, pooling=pooling, seed=seed),
            train_trunk=bool(train_trunk),
            head_hidden=_check_head_hidden(head_hidden),
            lora=lora,
            heteroscedastic=check_heteroscedastic(heteroscedastic),
        )
        super().__init__(config, tokenizer)
        #: LoRA only: in eval mode run all adapters in one mixed-adapter batch (False: one by one)
        self.lora_batched = True
        self.heads = MemberHeads(
            config.hidden_size, n_members, seed=config.seed, hidden=config.head_hidden,
            heteroscedastic=config.heteroscedastic,
        )
        if kind == "heads":
            self.backbone = backbone
        elif kind == "independent":
            members = [backbone] + [copy.deepcopy(backbone) for _ in range(n_members - 1)]
            self.backbones = nn.ModuleList(members)
        else:
            self.backbone = self._make_lora(backbone) if _init_adapters else backbone
        self._apply_trunk_freeze()

    # -- LoRA plumbing ----------------------------------------------------------------------
    @property
    def adapter_names(self) -> list[str]:
        """Names of the LoRA adapters (``member_0`` ...), one per member."""
        return [f"member_{k}" for k in range(self.n_members)]

    def _lora_config(self, fan_in_fan_out: bool = False):
        from peft import LoraConfig

        lora = self.config.lora or {}
        return LoraConfig(
            r=int(lora.get("r", 8)),
            lora_alpha=lora.get("alpha", 16),
            lora_dropout=float(lora.get("dropout", 0.0)),
            target_modules=lora.get("target_modules"),
            bias="none",
            fan_in_fan_out=fan_in_fan_out,
        )

    def _make_lora(self, base: nn.Module) -> nn.Module:
        from peft import get_peft_model

        # GPT-2 style Conv1D layers store weights transposed (PEFT would warn and switch)
        fan_in = any(type(m).__name__ == "Conv1D" for m in base.modules())
        peft_model = None
        for k, name in enumerate(self.adapter_names):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed + k)
                if peft_model is None:
                    peft_model = get_peft_model(base, self._lora_config(fan_in), adapter_name=name)
                else:
                    peft_model.add_adapter(name, self._lora_config(fan_in))
        self._activate_adapter(peft_model, self.adapter_names[0])
        return peft_model

    @staticmethod
    def _activate_adapter(peft_model: nn.Module, name: str) -> None:
        # set_adapter marks only the active adapter trainable; all K adapters are trained here,
        # so restore requires_grad on every LoRA parameter afterwards.
        peft_model.base_model.set_adapter(name)
        for pname, param in peft_model.named_parameters():
            if "lora_" in pname:
                param.requires_grad_(True)

    # -- model interface --------------------------------------------------------------------
    def _trunk_modules(self) -> list[nn.Module]:
        if self.config.kind == "independent":
            return list(self.backbones)
        return [self.backbone]

    def _backbone_config(self) -> Any:
        if self.config.kind == "independent":
            return self.backbones[0].config
        if self.config.kind == "lora":
            return self.backbone.get_base_model().config
        return self.backbone.config

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features: ``[B, H]`` for ``heads``; ``[B, K, H]`` for ``independent``/``lora``."""
        pooling = self.config.pooling
        kind = self.config.kind
        with self._trunk_context():
            if kind == "heads":
                return pool_hidden_states(_run_backbone(self.backbone, input_ids, attention_mask), attention_mask, pooling)
            if kind == "independent":
                feats = [
                    pool_hidden_states(_run_backbone(b, input_ids, attention_mask), attention_mask, pooling)
                    for b in self.backbones
                ]
                return torch.stack(feats, dim=1)
            return self._encode_lora(input_ids, attention_mask)

    def _encode_lora(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        k, b = self.n_members, input_ids.shape[0]
        pooling = self.config.pooling
        if not self.training and k > 1 and self.lora_batched:
            # one batched forward: PEFT routes each row through its own adapter
            names = [name for name in self.adapter_names for _ in range(b)]
            ids = input_ids.repeat(k, 1)
            mask = attention_mask.repeat(k, 1)
            hidden = _run_backbone(self.backbone, ids, mask, adapter_names=names)
            feats = pool_hidden_states(hidden, mask, pooling)
            return feats.view(k, b, -1).transpose(0, 1)
        feats = []
        try:
            for name in self.adapter_names:
                self._activate_adapter(self.backbone, name)
                hidden = _run_backbone(self.backbone, input_ids, attention_mask)
                feats.append(pool_hidden_states(hidden, attention_mask, pooling))
        finally:
            self._activate_adapter(self.backbone, self.adapter_names[0])
        return torch.stack(feats, dim=1)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """Member rewards ``[B, K]`` from ``encode``'s features."""
        return self.heads(features)

    @classmethod
    def from_backbone(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        kind: str = "heads",
        n_members: int = 5,
        pooling: str = "auto",
        seed: int = 0,
        train_trunk: bool | None = None,
        head_hidden: int | None = None,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        lora_target_modules: Any = None,
        heteroscedastic: bool = False,
        trust_remote_code: bool = False,
        tokenizer: Any = None,
        **backbone_kwargs: Any,
    ) -> RewardEnsemble:
        """Load a backbone by path or Hub id and build a K-member ensemble of the given ``kind``.

        ``train_trunk`` defaults to False for ``heads`` (frozen shared trunk) and True for
        ``independent``; for ``lora`` the adapters inside the trunk train (PEFT keeps the base
        weights frozen), so ``trunk_frozen`` is False.
        """
        check_choice(kind, "kind", ENSEMBLE_KINDS)
        check_int(n_members, "n_members", minimum=1)
        backbone, tokenizer = _load_backbone_and_tokenizer(path_or_hub_id, tokenizer, trust_remote_code, backbone_kwargs)
        return cls(
            backbone, tokenizer, kind=kind, n_members=n_members, pooling=pooling, seed=seed,
            train_trunk=train_trunk, head_hidden=head_hidden, lora_r=lora_r, lora_alpha=lora_alpha,
            lora_dropout=lora_dropout, lora_target_modules=lora_target_modules,
            backbone_name=_backbone_name(path_or_hub_id), heteroscedastic=heteroscedastic,
        )

    # -- checkpointing ----------------------------------------------------------------------
    def _weights_state(self) -> dict[str, torch.Tensor]:
        if self.config.kind == "lora":  # adapters are written in PEFT's format
            return _io.state_dict_for_saving(self, exclude=_lora_key)
        return _io.state_dict_for_saving(self)

    def _write_extra(self, directory: str) -> list[str]:
        if self.config.kind != "lora":
            return []
        adapters = os.path.join(directory, _io.ADAPTERS_DIR)
        self.backbone.save_pretrained(adapters, selected_adapters=self.adapter_names)
        out = []
        for name in self.adapter_names:
            rel = os.path.join(_io.ADAPTERS_DIR, name, "adapter_model.safetensors")
            if not os.path.isfile(os.path.join(directory, rel)):
                raise RuntimeError(f"PEFT did not write {rel!r}")
            out.append(rel)
        return out

    @classmethod
    def _expected_files(cls, config: RewardModelConfig) -> list[str]:
        files = super()._expected_files(config)
        if config.kind == "lora":
            for k in range(int(config.n_members)):
                for fname in ("adapter_config.json", "adapter_model.safetensors"):
                    files.append(os.path.join(_io.ADAPTERS_DIR, f"member_{k}", fname))
        return files

    @classmethod
    def _build_from_saved(cls, directory, config, backbone_config, tokenizer, trust_remote_code):
        backbone = backbone_from_config(backbone_config, trust_remote_code=trust_remote_code)
        lora = config.lora or {}
        model = cls(
            backbone, tokenizer, kind=config.kind, n_members=config.n_members, pooling=config.pooling,
            seed=config.seed, train_trunk=config.train_trunk, head_hidden=config.head_hidden,
            lora_r=lora.get("r", 8), lora_alpha=lora.get("alpha", 16), lora_dropout=lora.get("dropout", 0.0),
            lora_target_modules=lora.get("target_modules"), backbone_name=config.backbone,
            _init_adapters=config.kind != "lora", heteroscedastic=bool(config.heteroscedastic),
        )
        if config.kind == "lora":
            model.backbone = model._load_lora(directory, backbone)
            model._load_weights_file(directory, allow_missing=_lora_key)
        else:
            model._load_weights_file(directory)
        return model

    def _load_lora(self, directory: str, base: nn.Module) -> nn.Module:
        from peft import PeftModel

        peft_model = None
        for name in self.adapter_names:
            path = os.path.join(directory, _io.ADAPTERS_DIR, name)
            try:
                if peft_model is None:
                    peft_model = PeftModel.from_pretrained(base, path, adapter_name=name, is_trainable=True)
                else:
                    peft_model.load_adapter(path, adapter_name=name, is_trainable=True)
            except (RuntimeError, OSError, ValueError, KeyError) as err:
                raise ValueError(f"could not load LoRA adapter {path!r} (truncated or tampered?): {err}") from None
        self._activate_adapter(peft_model, self.adapter_names[0])
        return peft_model


_MODEL_CLASSES["reward_model"] = RewardModel
_MODEL_CLASSES["reward_ensemble"] = RewardEnsemble

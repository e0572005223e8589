"""Reward models: a single model, ensembles (heads / independent / LoRA) and MC dropout.

Every model here is an ``nn.Module`` whose ``forward(input_ids, attention_mask)`` returns member
rewards ``[B, n_members]``. The trunk split ``encode`` (pooled features) / ``forward_features``
(rewards from features) lets a trainer cache the features of a frozen trunk (``trunk_frozen``).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import os
from typing import Any

import torch
from torch import nn

from auq._checks import check_choice, check_device, check_float, check_int

from . import _io, _trunk_store
from ._backbone import (
    backbone_from_config,
    ensure_pad_token,
    find_layer_list,
    hidden_size_of,
    load_backbone,
    load_tokenizer,
    pool_hidden_states,
    resolve_pooling,
)
from ._config import ENSEMBLE_KINDS, MC_SCOPES, RewardModelConfig
from ._heads import MemberHeads
from ._hetero import HeteroscedasticMixin, check_heteroscedastic
from ._uncertainty import UncertaintyState

logger = logging.getLogger(__name__)

__all__ = [
    "BaseRewardModel",
    "RewardModel",
    "RewardEnsemble",
    "MCDropoutRewardModel",
    "load_reward_model",
]


def _auq_version() -> str:
    try:
        from auq import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


def _check_seed(seed: Any) -> int:
    return check_int(seed, "seed", minimum=0)


def _check_head_hidden(head_hidden: Any) -> int | None:
    return None if head_hidden is None else check_int(head_hidden, "head_hidden", minimum=1)


def _backbone_name(path_or_hub_id: Any) -> str:
    return os.fspath(path_or_hub_id) if isinstance(path_or_hub_id, (str, os.PathLike)) else ""


def _takes_position_ids(backbone: nn.Module) -> bool:
    base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    if getattr(getattr(base, "config", None), "model_type", "") in _OFFSET_POSITIONS:
        return False  # these derive padding-aware positions from input_ids themselves
    try:
        return "position_ids" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic forward
        return False


def _run_backbone(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any) -> torch.Tensor:
    if "position_ids" not in kw and attention_mask is not None and bool((attention_mask[:, 0] == 0).any()):
        # left padding: count positions from each text's first real token, as generation does,
        # so that a reward does not depend on how much padding its batch needed
        if _takes_position_ids(backbone):
            kw["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, **kw)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        hidden = out[0]
    return hidden


_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")


class BaseRewardModel(UncertaintyState, nn.Module):
    """Common machinery: config, tokenizer, device, checkpointing, trunk freezing.

    Every model also carries the training-time uncertainty state of :class:`UncertaintyState`:
    ``density`` (feature-space OOD score), ``reward_offsets`` (members' mean training rewards),
    ``anchor``, ``fit_uncertainty``; saved in ``uncertainty.safetensors``.

    Subclasses implement ``encode``, ``forward_features``, ``forward`` and the checkpoint hooks
    ``_extra_files``/``_write_extra``/``_build_from_saved``.
    """

    config: RewardModelConfig

    def __init__(self, config: RewardModelConfig, tokenizer: Any):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        if tokenizer is not None:
            ensure_pad_token(tokenizer)

    # -- basic properties -------------------------------------------------------------------
    @property
    def n_members(self) -> int:
        """Number of reward columns returned by ``forward``."""
        return int(self.config.n_members)

    @property
    def trunk_frozen(self) -> bool:
        """True when the backbone's weights are not trained (its features may be cached)."""
        return not self.config.train_trunk

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    def _trunk_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def max_positions(self) -> int | None:
        """The most tokens per text the backbone (and its tokenizer) can take, or None if unknown."""
        limits = []
        for module in self._trunk_modules():
            cfg = getattr(module, "config", None)
            n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
            if isinstance(n, int) and n > 0:
                if getattr(cfg, "model_type", "") in _OFFSET_POSITIONS:
                    n -= int(getattr(cfg, "pad_token_id", 1) or 1) + 1  # RoBERTa-style offset
                limits.append(n)
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limits.append(tok_max)
        return min(limits) if limits else None

    def make_collator(self, max_length: int | None = None, tokenizer: Any = None) -> Any:
        """The :class:`auq.data.PreferenceCollator` for this model's tokenizer.

        ``max_length`` defaults to the length the model was trained with (``config.max_length``,
        else 512) and is capped at :attr:`max_positions`, so that no text is longer than the
        backbone's position embeddings. ``tokenizer`` overrides the model's own.
        """
        from auq.data import PreferenceCollator

        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("model has no tokenizer; pass a collator")
        if max_length is not None:
            check_int(max_length, "max_length", minimum=2)
        requested = max_length or self.config.max_length or 512
        cap = self.max_positions
        if cap is not None and requested > cap:
            logger.info("max_length %d exceeds what the backbone takes; using %d", requested, cap)
            requested = cap
        return PreferenceCollator(tokenizer, max_length=requested)

    def _apply_trunk_freeze(self) -> None:
        if self.trunk_frozen:
            for module in self._trunk_modules():
                module.requires_grad_(False)
                module.eval()

    def train(self, mode: bool = True) -> BaseRewardModel:
        """Set training mode; a frozen trunk stays in eval mode (a fixed feature extractor).

        Keeping a frozen trunk in eval mode makes its features deterministic, so features cached
        once equal the features the model computes live.
        """
        super().train(mode)
        if self.trunk_frozen:
            for module in self._trunk_modules():
                module.eval()
        return self

    def _trunk_context(self):
        return torch.no_grad() if self.trunk_frozen else contextlib.nullcontext()

    # -- interface --------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features of the texts (``[B, H]``, or ``[B, K, H]`` for per-member trunks)."""
        raise NotImplementedError

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """Member rewards ``[B, n_members]`` from the features ``encode`` returned."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Member rewards ``[B, n_members]``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.forward_features(self.encode(input_ids, attention_mask))

    # -- checkpointing ----------------------------------------------------------------------
    def _backbone_config(self) -> Any:
        raise NotImplementedError

    def _weights_state(self) -> dict[str, torch.Tensor]:
        return _io.state_dict_for_saving(self)

    def _write_extra(self, directory: str) -> list[str]:
        """Write extra files (LoRA adapters); return their paths relative to ``directory``."""
        return []

    def save_pretrained(self, save_directory: str | os.PathLike, *, trunk_store: str | os.PathLike | None = None) -> None:
        """Save config, weights (safetensors), backbone config and tokenizer, atomically.

        By default the directory is self-contained: :meth:`from_pretrained` rebuilds the model
        offline without the original backbone path.

        Parameters
        ----------
        save_directory : path
        trunk_store : path, optional
            A folder *outside* ``save_directory`` that keeps a frozen trunk once for many
            checkpoints (what the reward trainer's ``checkpoint-*`` folders use): the trunk's
            tensors go to ``trunk_store/trunk-<sha256>.safetensors`` (written only when no file of
            that content is there), and ``save_directory`` keeps the other tensors and a
            ``trunk.json`` reference (relative path + SHA-256, verified on loading). Ignored (the
            folder is self-contained) when the trunk is trained.

        Examples
        --------
        >>> model.save_pretrained("rm")  # doctest: +SKIP
        >>> same = type(model).from_pretrained("rm")  # doctest: +SKIP
        >>> model.save_pretrained("runs/step-10", trunk_store="runs/trunk")  # doctest: +SKIP
        """
        if not isinstance(save_directory, (str, os.PathLike)):
            raise TypeError(f"save_directory must be a path, got {type(save_directory).__name__}")
        if trunk_store is not None:
            if not isinstance(trunk_store, (str, os.PathLike)):
                raise TypeError(f"trunk_store must be a path or None, got {type(trunk_store).__name__}")
            _trunk_store.check_store_location(os.fspath(save_directory), os.fspath(trunk_store))

        referenced: list[bool] = []

        def writer(tmp: str) -> None:
            weights = os.path.join(tmp, _io.WEIGHTS_NAME)
            state = self._weights_state()
            shared = _trunk_store.trunk_keys(self, state) if trunk_store is not None else []
            checksums = {}
            if trunk_store is not None and not shared:
                logger.info("trunk_store: the trunk is trained (not frozen); saving a self-contained folder")
            if shared:
                path, sha = _trunk_store.write_trunk(self, os.fspath(trunk_store), {k: state.pop(k) for k in shared})
                rel = _trunk_store.write_reference(tmp, os.fspath(save_directory), path, sha, len(shared))
                checksums[rel] = _io.sha256_file(os.path.join(tmp, rel))
                referenced.append(True)
            _io.save_weights(state, weights)
            checksums[_io.WEIGHTS_NAME] = _io.sha256_file(weights)
            for rel in self._write_extra(tmp):
                checksums[rel] = _io.sha256_file(os.path.join(tmp, rel))
            rel = self._write_uncertainty(tmp)
            checksums[rel] = _io.sha256_file(os.path.join(tmp, rel))
            self._backbone_config().save_pretrained(os.path.join(tmp, _io.BACKBONE_DIR))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(os.path.join(tmp, _io.TOKENIZER_DIR))
            cfg = self.config.to_dict()
            cfg["auq_version"] = _auq_version()
            cfg["checksums"] = checksums
            _io.write_json(cfg, os.path.join(tmp, _io.CONFIG_NAME))  # last: marks a complete write

        _io.atomic_write_dir(save_directory, writer)
        stray = os.path.join(os.fspath(save_directory), _trunk_store.TRUNK_REFERENCE_NAME)
        if not referenced and os.path.exists(stray):  # carried over from an earlier save there
            os.remove(stray)
        logger.info("saved %s to %s", type(self).__name__, os.fspath(save_directory))

    @classmethod
    def _expected_files(cls, config: RewardModelConfig) -> list[str]:
        return [
            _io.WEIGHTS_NAME,
            os.path.join(_io.BACKBONE_DIR, "config.json"),
            os.path.join(_io.TOKENIZER_DIR, "tokenizer_config.json"),
        ]

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        verify: bool = True,
    ) -> BaseRewardModel:
        """Load a model written by :meth:`save_pretrained` (safetensors only, never unpickles).

        Parameters
        ----------
        directory : path
            The checkpoint directory.
        device : str or torch.device, optional
            Where to put the model (default: CPU).
        trust_remote_code : bool, default False
            Passed to ``AutoConfig``/``AutoTokenizer``; off unless asked.
        verify : bool, default True
            Check the weights files against the SHA-256 digests stored in ``config.json``.

        Raises
        ------
        FileNotFoundError
            The directory or one of its expected files is missing (the message names it).
        ValueError
            A weights file is truncated, tampered with, or does not match the model.
        """
        directory = os.fspath(directory)
        if device is not None:
            device = check_device(device, "device")  # before anything is read: "gpu0" names itself
        data = _io.read_config(directory)
        config = RewardModelConfig.from_dict(data)
        target = _MODEL_CLASSES.get(config.auq_model_type)
        if target is None:
            raise ValueError(f"unknown auq_model_type {config.auq_model_type!r} in {directory!r}")
        if cls is not BaseRewardModel and not issubclass(target, cls):
            raise ValueError(
                f"{directory!r} holds a {target.__name__} (auq_model_type={config.auq_model_type!r}), "
                f"not a {cls.__name__}; use load_reward_model"
            )
        _io.check_files(directory, target._expected_files(config))
        if verify and config.checksums:
            _io.verify_checksums(directory, config.checksums)
        trunk_file = None
        if _trunk_store.TRUNK_REFERENCE_NAME in (config.checksums or {}):  # a shared trunk: present and intact
            trunk_file = _trunk_store.resolve_reference(directory, verify=verify)
        from transformers import AutoConfig, AutoTokenizer

        backbone_config = AutoConfig.from_pretrained(
            os.path.join(directory, _io.BACKBONE_DIR), trust_remote_code=trust_remote_code
        )
        tokenizer = AutoTokenizer.from_pretrained(
            os.path.join(directory, _io.TOKENIZER_DIR), trust_remote_code=trust_remote_code
        )
        with _trunk_store.loading(trunk_file):
            model = target._build_from_saved(directory, config, backbone_config, tokenizer, trust_remote_code)
        model.config.max_length = config.max_length  # the trained length: scoring truncates alike
        model._read_uncertainty(directory)
        model.eval()
        if device is not None:
            model.to(device)
        return model

    @classmethod
    def _build_from_saved(cls, directory: str, config: RewardModelConfig, backbone_config: Any, tokenizer: Any, trust_remote_code: bool) -> BaseRewardModel:
        raise NotImplementedError

    def _load_weights_file(self, directory: str, allow_missing=None) -> None:
        path = os.path.join(directory, _io.WEIGHTS_NAME)
        state = _trunk_store.merge_trunk(_io.load_weights(path), path)
        _io.load_state_into(self, state, path, allow_missing=allow_missing)


# ---------------------------------------------------------------------------------------------
class RewardModel(HeteroscedasticMixin, BaseRewardModel):
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
        bcfg = backbone.config
        config = RewardModelConfig(
            auq_model_type="reward_model",
            kind="single",
            n_members=1,
            backbone=backbone_name,
            backbone_model_type=str(getattr(bcfg, "model_type", "")),
            pooling=resolve_pooling(pooling, bcfg),
            hidden_size=hidden_size_of(bcfg),
            seed=_check_seed(seed),
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
        backbone = load_backbone(path_or_hub_id, trust_remote_code=trust_remote_code, **backbone_kwargs)
        if tokenizer is None:
            tokenizer = load_tokenizer(path_or_hub_id, trust_remote_code=trust_remote_code)
        return cls(
            backbone, tokenizer, pooling=pooling, seed=seed, train_trunk=train_trunk,
            head_hidden=head_hidden, backbone_name=_backbone_name(path_or_hub_id),
            heteroscedastic=heteroscedastic,
        )

    def _trunk_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def _backbone_config(self) -> Any:
        return self.backbone.config

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, H]``."""
        with self._trunk_context():
            hidden = _run_backbone(self.backbone, input_ids, attention_mask)
            return pool_hidden_states(hidden, attention_mask, self.config.pooling)

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
        bcfg = backbone.config
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
            backbone=backbone_name,
            backbone_model_type=str(getattr(bcfg, "model_type", "")),
            pooling=resolve_pooling(pooling, bcfg),
            hidden_size=hidden_size_of(bcfg),
            seed=_check_seed(seed),
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
        backbone = load_backbone(path_or_hub_id, trust_remote_code=trust_remote_code, **backbone_kwargs)
        if tokenizer is None:
            tokenizer = load_tokenizer(path_or_hub_id, trust_remote_code=trust_remote_code)
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


# ---------------------------------------------------------------------------------------------
class _LayerDropout:
    """Forward hooks multiplying each transformer layer's output hidden states by per-sample masks."""

    def __init__(self, masks: list[torch.Tensor], n_rows: int):
        self.masks = masks  # one [t, H] tensor per layer for the samples in this chunk
        self.n_rows = n_rows  # rows per sample (the original batch size)

    def hook(self, index: int):
        def fn(module: nn.Module, inputs: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            if not isinstance(hidden, torch.Tensor):
                hidden = getattr(output, "last_hidden_state", None)
                if hidden is None:
                    raise TypeError(f"cannot apply MC dropout to the output of {type(module).__name__}")
            mask = self.masks[index].to(hidden.dtype)
            t = mask.shape[0]
            shape = hidden.shape
            scaled = (hidden.reshape(t, self.n_rows, *shape[1:]) * mask.view(t, 1, *([1] * (len(shape) - 2)), -1)).reshape(shape)
            if isinstance(output, tuple):
                return (scaled, *output[1:])
            if isinstance(output, torch.Tensor):
                return scaled
            output.last_hidden_state = scaled
            return output

        return fn


_MC_HETERO = (
    "heteroscedastic=True needs scope='head' for MC dropout (with scope='full' dropout acts inside "
    "the trunk); use scope='head', RewardModel or RewardEnsemble"
)


class MCDropoutRewardModel(HeteroscedasticMixin, BaseRewardModel):
    """Monte-Carlo dropout reward model: T dropout samples are T reward columns.

    Parameters
    ----------
    backbone, tokenizer, pooling, seed, head_hidden :
        As for :class:`RewardModel`.
    n_samples : int
        T, the number of dropout samples (``n_members = T``).
    scope : {"head", "full"}
        ``"head"``: the trunk runs once (its own dropout off), dropout is applied to the pooled
        features that enter the head; the T samples cost one ``[B, H] @ [H, T]`` matmul.
        ``"full"``: T stochastic passes of the trunk. Dropout is injected by forward hooks on each
        transformer layer (``BertLayer``, ``GPT2Block``, ``LlamaDecoderLayer`` ... the backbone's
        layer list) multiplying the layer's output hidden states by a mask; the backbone's own
        dropout modules and attention dropout stay as the user set them (off in eval mode), so
        scaled-dot-product attention keeps its fast kernel and backbones without dropout modules
        (Llama) work the same way. Batched: the batch is repeated T times along the batch axis,
        ``mc_batch_size`` rows per forward; ``batched=False`` loops over the samples.
    p : float
        Dropout probability in [0, 1); kept units are scaled by ``1 / (1 - p)``.
    mc_batch_size : int or None
        Maximum rows per stochastic forward for ``scope="full"`` (None: all T x B at once).
    batched : bool or None
        For ``scope="full"``: repeat the batch (True) or loop over samples (False). None (default):
        batch on an accelerator, loop on a CPU, where batching was measured slower (2 cores,
        MiniLM, 16 pairs x 128 tokens, T=16: loop 15.6x one model, batched 20.6x).
    heteroscedastic : bool, default False
        ``scope="head"`` only: the head also learns a per-response noise variance, evaluated under
        the same dropout masks (:meth:`forward_with_variance`).
    train_trunk : bool or None
        Default: False for ``scope="head"`` (frozen trunk), True for ``scope="full"``.

    Notes
    -----
    **Masks.** Sample t uses one fixed mask over the H feature channels (per layer for
    ``"full"``), shared by all rows and positions: each sample is one thinned sub-network, so a
    text gets the same T rewards whatever batch it is in, chosen and rejected of a pair are scored
    by the same sub-networks, and centring each member's rewards is meaningful. In eval mode the
    masks are drawn from a ``torch.Generator`` seeded with ``seed`` (same seed -> identical
    rewards, different seeds -> different samples); in training mode fresh masks are drawn from
    the global torch RNG on each call. Dropout is applied through the masks only; no module's
    ``training`` flag is changed (batch-norm and the backbone's own dropout are untouched).

    Examples
    --------
    >>> mc = MCDropoutRewardModel.from_backbone(path, n_samples=16, scope="head")  # doctest: +SKIP
    >>> mc(input_ids, attention_mask).shape  # doctest: +SKIP
    torch.Size([4, 16])
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        n_samples: int = 16,
        scope: str = "head",
        p: float = 0.1,
        seed: int = 0,
        pooling: str = "auto",
        mc_batch_size: int | None = None,
        batched: bool | None = None,
        train_trunk: bool | None = None,
        head_hidden: int | None = None,
        backbone_name: str = "",
        heteroscedastic: bool = False,
    ):
        n_samples = check_int(n_samples, "n_samples", minimum=1)
        check_choice(scope, "scope", MC_SCOPES)
        if check_heteroscedastic(heteroscedastic) and scope != "head":
            raise ValueError(_MC_HETERO)
        p = check_float(p, "p", minimum=0.0, maximum=1.0, inclusive=(True, False))
        if mc_batch_size is not None:
            mc_batch_size = check_int(mc_batch_size, "mc_batch_size", minimum=1)
        if train_trunk is None:
            train_trunk = scope == "full"
        bcfg = backbone.config
        config = RewardModelConfig(
            auq_model_type="mc_dropout",
            kind="mc_dropout",
            n_members=n_samples,
            backbone=backbone_name,
            backbone_model_type=str(getattr(bcfg, "model_type", "")),
            pooling=resolve_pooling(pooling, bcfg),
            hidden_size=hidden_size_of(bcfg),
            seed=_check_seed(seed),
            train_trunk=bool(train_trunk),
            head_hidden=_check_head_hidden(head_hidden),
            n_samples=n_samples,
            scope=scope,
            p=p,
            mc_batch_size=mc_batch_size,
            batched=None if batched is None else bool(batched),
            heteroscedastic=heteroscedastic,
        )
        super().__init__(config, tokenizer)
        self.backbone = backbone
        self.heads = MemberHeads(
            config.hidden_size, 1, seed=config.seed, hidden=config.head_hidden,
            heteroscedastic=config.heteroscedastic,
        )
        # a plain list, so the layers are not registered (and saved) a second time
        self._layers = list(find_layer_list(backbone)) if scope == "full" else None
        self._mask_cache: dict[Any, Any] = {}
        self._apply_trunk_freeze()

    @classmethod
    def from_backbone(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        n_samples: int = 16,
        scope: str = "head",
        p: float = 0.1,
        seed: int = 0,
        pooling: str = "auto",
        mc_batch_size: int | None = None,
        batched: bool | None = None,
        train_trunk: bool | None = None,
        head_hidden: int | None = None,
        trust_remote_code: bool = False,
        tokenizer: Any = None,
        heteroscedastic: bool = False,
        **backbone_kwargs: Any,
    ) -> MCDropoutRewardModel:
        """Load a backbone by path or Hub id and wrap it for MC dropout."""
        check_int(n_samples, "n_samples", minimum=1)
        check_choice(scope, "scope", MC_SCOPES)
        if check_heteroscedastic(heteroscedastic) and scope != "head":
            raise ValueError(_MC_HETERO)
        check_float(p, "p", minimum=0.0, maximum=1.0, inclusive=(True, False))
        backbone = load_backbone(path_or_hub_id, trust_remote_code=trust_remote_code, **backbone_kwargs)
        if tokenizer is None:
            tokenizer = load_tokenizer(path_or_hub_id, trust_remote_code=trust_remote_code)
        return cls(
            backbone, tokenizer, n_samples=n_samples, scope=scope, p=p, seed=seed, pooling=pooling,
            mc_batch_size=mc_batch_size, batched=batched, train_trunk=train_trunk,
            head_hidden=head_hidden, backbone_name=_backbone_name(path_or_hub_id),
            heteroscedastic=heteroscedastic,
        )

    @property
    def n_samples(self) -> int:
        return int(self.config.n_samples)

    @property
    def scope(self) -> str:
        return str(self.config.scope)

    def _trunk_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def _backbone_config(self) -> Any:
        return self.backbone.config

    # -- masks ------------------------------------------------------------------------------
    def sample_masks(self, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Dropout masks: a list with one ``[T, H]`` tensor per dropout site (scaled by 1/(1-p)).

        Sites: the pooled features (``scope="head"``) or each transformer layer's output
        (``scope="full"``). With ``generator=None`` the masks come from a CPU generator seeded
        with ``config.seed`` (the same every call).
        """
        n_sites = 1 if self.scope == "head" else len(self._layers)
        t, h, p = self.n_samples, self.config.hidden_size, float(self.config.p)
        if generator is None:
            generator = torch.Generator().manual_seed(int(self.config.seed))
        if p == 0.0:
            masks = [torch.ones(t, h) for _ in range(n_sites)]
        else:
            masks = [(torch.rand(t, h, generator=generator) >= p).float() / (1.0 - p) for _ in range(n_sites)]
        return [m.to(device) for m in masks]

    def _masks(self, device: torch.device) -> list[torch.Tensor]:
        if self.training:  # fresh masks from the global RNG while training
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
            return self.sample_masks(device, gen)
        key = (int(self.config.seed), float(self.config.p), self.n_samples, str(device))
        if key not in self._mask_cache:
            self._mask_cache.clear()
            self._mask_cache[key] = self.sample_masks(device)
        return self._mask_cache[key]

    # -- forward ----------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Deterministic pooled features ``[B, H]`` (no MC dropout applied)."""
        with self._trunk_context():
            hidden = _run_backbone(self.backbone, input_ids, attention_mask)
            return pool_hidden_states(hidden, attention_mask, self.config.pooling)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """``scope="head"``: T dropout samples of the head on features ``[B, H]`` -> ``[B, T]``."""
        if self.scope != "head":
            raise NotImplementedError(
                "forward_features needs scope='head'; with scope='full' dropout acts inside the "
                "trunk, so rewards cannot be computed from cached features"
            )
        masks = self._masks(features.device)[0]
        return self.heads.forward_masked(features, masks)

    def forward_features_with_variance(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``scope="head"``, heteroscedastic: rewards and noise variances ``[B, T]`` under the T masks."""
        if not self.heteroscedastic:
            return super().forward_features_with_variance(features)  # raises the clear error
        masks = self._masks(features.device)[0]
        return self.heads.forward_masked_with_variance(features, masks)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards ``[B, T]``, one column per dropout sample."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.scope == "head":
            return self.forward_features(self.encode(input_ids, attention_mask))
        return self._forward_full(input_ids, attention_mask)

    def _forward_full(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b = input_ids.shape[0]
        t = self.n_samples
        masks = self._masks(input_ids.device)
        batched = self.config.batched
        if batched is None:
            batched = input_ids.device.type != "cpu"
        if batched:
            rows = self.config.mc_batch_size or t * b
            per_chunk = max(1, rows // b)
        else:
            per_chunk = 1
        out = []
        for start in range(0, t, per_chunk):
            stop = min(t, start + per_chunk)
            n = stop - start
            state = _LayerDropout([m[start:stop] for m in masks], b)
            handles = [layer.register_forward_hook(state.hook(i)) for i, layer in enumerate(self._layers)]
            try:
                ids = input_ids.repeat(n, 1) if n > 1 else input_ids
                mask = attention_mask.repeat(n, 1) if n > 1 else attention_mask
                with self._trunk_context():
                    hidden = _run_backbone(self.backbone, ids, mask)
                    feats = pool_hidden_states(hidden, mask, self.config.pooling)
            finally:
                for handle in handles:
                    handle.remove()
            out.append(self.heads(feats).view(n, b).t())
        return torch.cat(out, dim=1)

    @classmethod
    def _build_from_saved(cls, directory, config, backbone_config, tokenizer, trust_remote_code):
        backbone = backbone_from_config(backbone_config, trust_remote_code=trust_remote_code)
        model = cls(
            backbone, tokenizer, n_samples=config.n_samples, scope=config.scope, p=config.p,
            seed=config.seed, pooling=config.pooling, mc_batch_size=config.mc_batch_size,
            batched=config.batched, train_trunk=config.train_trunk,
            head_hidden=config.head_hidden, backbone_name=config.backbone,
            heteroscedastic=bool(config.heteroscedastic),
        )
        model._load_weights_file(directory)
        return model


_MODEL_CLASSES: dict[str, type[BaseRewardModel]] = {
    "reward_model": RewardModel,
    "reward_ensemble": RewardEnsemble,
    "mc_dropout": MCDropoutRewardModel,
}


def load_reward_model(
    directory: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    verify: bool = True,
) -> BaseRewardModel:
    """Load any auq reward model saved with ``save_pretrained`` (dispatch on ``auq_model_type``).

    Examples
    --------
    >>> model = load_reward_model("rm")  # doctest: +SKIP
    """
    return BaseRewardModel.from_pretrained(
        directory, device=device, trust_remote_code=trust_remote_code, verify=verify
    )

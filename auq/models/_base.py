"""The reward-model base class (checkpoints, devices, the trunk/heads split), the registry of model
types and :func:`load_reward_model`.

Every model is an ``nn.Module`` whose ``forward(input_ids, attention_mask)`` returns member
rewards ``[B, n_members]``. The trunk split ``encode`` (pooled features) / ``forward_features``
(rewards from features) lets a trainer cache the features of a frozen trunk (``trunk_frozen``).
Each model module registers its classes in ``_MODEL_CLASSES`` under their ``auq_model_type``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from typing import Any

import torch
from torch import nn

from auq._checks import check_device, check_int

from . import _io, _trunk_store
from ._backbone import (
    ensure_pad_token,
    hidden_size_of,
    load_backbone,
    load_tokenizer,
    pool_hidden_states,
    resolve_pooling,
)
from ._config import RewardModelConfig
from ._uncertainty import UncertaintyState

logger = logging.getLogger(__name__)

__all__ = ["BaseRewardModel", "load_reward_model"]


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


def _backbone_fields(backbone: nn.Module, *, backbone_name: str, pooling: str, seed: Any) -> dict[str, Any]:
    """The :class:`RewardModelConfig` fields a model takes from its backbone (``pooling`` resolved,
    ``seed`` checked)."""
    bcfg = backbone.config
    return {
        "backbone": backbone_name,
        "backbone_model_type": str(getattr(bcfg, "model_type", "")),
        "pooling": resolve_pooling(pooling, bcfg),
        "hidden_size": hidden_size_of(bcfg),
        "seed": _check_seed(seed),
    }


def _load_backbone_and_tokenizer(
    path_or_hub_id: str | os.PathLike, tokenizer: Any, trust_remote_code: bool, backbone_kwargs: dict[str, Any]
) -> tuple[nn.Module, Any]:
    """What every ``from_backbone`` loads: the backbone, and its tokenizer unless one is given."""
    backbone = load_backbone(path_or_hub_id, trust_remote_code=trust_remote_code, **backbone_kwargs)
    if tokenizer is None:
        tokenizer = load_tokenizer(path_or_hub_id, trust_remote_code=trust_remote_code)
    return backbone, tokenizer


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


class _SingleBackboneMixin:
    """Trunk plumbing of a model with one backbone in ``self.backbone`` (pooled ``[B, H]`` features)."""

    def _trunk_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def _backbone_config(self) -> Any:
        return self.backbone.config

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, H]`` of the backbone (``config.pooling``)."""
        with self._trunk_context():
            hidden = _run_backbone(self.backbone, input_ids, attention_mask)
            return pool_hidden_states(hidden, attention_mask, self.config.pooling)


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


#: ``auq_model_type`` -> class; filled by the modules that define the classes.
_MODEL_CLASSES: dict[str, type[BaseRewardModel]] = {}


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

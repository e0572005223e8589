"""MC-dropout reward model: dropout kept on at scoring time, each sample a member."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from auq._checks import check_choice, check_float, check_int

from ._backbone import backbone_from_config, find_layer_list, pool_hidden_states
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
from ._config import MC_SCOPES, RewardModelConfig
from ._heads import MemberHeads
from ._hetero import HeteroscedasticMixin, check_heteroscedastic

logger = logging.getLogger(__name__)

__all__ = ["MCDropoutRewardModel"]


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


def _check_mc_args(n_samples: Any, scope: Any, p: Any, heteroscedastic: Any) -> tuple[int, float]:
    """Checked ``n_samples`` and ``p`` (``scope`` and ``heteroscedastic`` checked in place)."""
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    check_choice(scope, "scope", MC_SCOPES)
    if check_heteroscedastic(heteroscedastic) and scope != "head":
        raise ValueError(_MC_HETERO)
    return n_samples, check_float(p, "p", minimum=0.0, maximum=1.0, inclusive=(True, False))


class MCDropoutRewardModel(HeteroscedasticMixin, _SingleBackboneMixin, BaseRewardModel):
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
    ``encode`` returns the deterministic pooled features ``[B, H]`` (no MC dropout applied).

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
        n_samples, p = _check_mc_args(n_samples, scope, p, heteroscedastic)
        if mc_batch_size is not None:
            mc_batch_size = check_int(mc_batch_size, "mc_batch_size", minimum=1)
        if train_trunk is None:
            train_trunk = scope == "full"
        config = RewardModelConfig(
            auq_model_type="mc_dropout",
            kind="mc_dropout",
            n_members=n_samples,
            **_backbone_fields(backbone, backbone_name=backbone_name, pooling=pooling, seed=seed),
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
        _check_mc_args(n_samples, scope, p, heteroscedastic)  # before loading the backbone
        backbone, tokenizer = _load_backbone_and_tokenizer(path_or_hub_id, tokenizer, trust_remote_code, backbone_kwargs)
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


_MODEL_CLASSES["mc_dropout"] = MCDropoutRewardModel

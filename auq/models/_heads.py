"""K reward heads evaluated as one batched operation.

``MemberHeads(H, K)`` holds K independently initialised heads. A linear head is one fused
``[K, H]`` weight, so K heads cost one ``[B, H] @ [H, K]`` matmul; an MLP head (``hidden=M``) keeps
``[K, H, M]`` and ``[K, M]`` weights evaluated with ``einsum``. Features may be shared by all members
(``[B, H]``) or per member (``[B, K, H]``: member k reads ``features[:, k]``).

Heteroscedastic heads (``heteroscedastic=True``) add, per member, a linear variance head on the same
features: ``var_k(x) = softplus(v_k·x + c_k)``, clamped to ``[0, VAR_MAX]``. It starts at
``VAR_INIT`` for every input (``v_k = 0``; softplus behaves like ``exp`` there, so the head learns
the log-variance with gradients that do not vanish) and grows at most linearly for large inputs.
``forward`` still returns the reward means ``[B, K]``; :meth:`MemberHeads.forward_with_variance`
returns the means and the per-response noise variances.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MemberHeads", "VAR_INIT", "VAR_MAX"]

#: initial noise variance of a heteroscedastic head (reward units squared)
VAR_INIT = 0.01
#: upper clamp of the noise variance (numerical safety; the probit factor is then ~1/1000)
VAR_MAX = 1.0e6


class MemberHeads(nn.Module):
    """K scalar reward heads, member k initialised from seed ``seed + k``.

    Parameters
    ----------
    in_features : int
        Feature size H.
    n_members : int
        Number of heads K.
    seed : int
        Member k's weights are drawn from a generator seeded with ``seed + k``, so a model with
        K members and one with K' > K members agree on their first K heads.
    hidden : int or None
        ``None`` for linear heads; an int M for a one-hidden-layer MLP head (tanh) per member.
    heteroscedastic : bool, default False
        Also learn a per-response noise variance per member (a linear softplus head on the same
        features, see the module docstring); parameters ``var_weight [K, H]``, ``var_bias [K]``.

    Examples
    --------
    >>> heads = MemberHeads(4, 3, seed=0)
    >>> heads(torch.ones(2, 4)).shape
    torch.Size([2, 3])
    >>> mean, var = MemberHeads(4, 3, heteroscedastic=True).forward_with_variance(torch.ones(2, 4))
    >>> mean.shape, round(float(var[0, 0].detach()), 4)
    (torch.Size([2, 3]), 0.01)
    """

    def __init__(
        self,
        in_features: int,
        n_members: int,
        seed: int = 0,
        hidden: int | None = None,
        heteroscedastic: bool = False,
    ):
        super().__init__()
        self.in_features = int(in_features)
        self.n_members = int(n_members)
        self.hidden = None if hidden is None else int(hidden)
        self.heteroscedastic = bool(heteroscedastic)
        if self.heteroscedastic:
            self.var_weight = nn.Parameter(torch.zeros(self.n_members, self.in_features))
            self.var_bias = nn.Parameter(torch.zeros(self.n_members))
        k, h = self.n_members, self.in_features
        if self.hidden is None:
            self.weight = nn.Parameter(torch.empty(k, h))
            self.bias = nn.Parameter(torch.zeros(k))
        else:
            m = self.hidden
            self.weight1 = nn.Parameter(torch.empty(k, h, m))
            self.bias1 = nn.Parameter(torch.zeros(k, m))
            self.weight = nn.Parameter(torch.empty(k, m))
            self.bias = nn.Parameter(torch.zeros(k))
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """(Re)initialise member k from a CPU generator seeded with ``seed + k``.

        Weights are normal with standard deviation ``1/sqrt(fan_in)``; biases are zero.
        """
        #: True while the weights are the seeded initial draw (not loaded, drawn from a prior or
        #: trained by auq's trainer); anchored ensembling rescales only fresh heads
        self.fresh = True
        for k in range(self.n_members):
            gen = torch.Generator().manual_seed(int(seed) + k)
            if self.hidden is None:
                w = torch.randn(self.in_features, generator=gen) / math.sqrt(self.in_features)
                self.weight[k].copy_(w)
            else:
                w1 = torch.randn(self.in_features, self.hidden, generator=gen) / math.sqrt(self.in_features)
                w2 = torch.randn(self.hidden, generator=gen) / math.sqrt(self.hidden)
                self.weight1[k].copy_(w1)
                self.weight[k].copy_(w2)
        self.bias.zero_()
        if self.hidden is not None:
            self.bias1.zero_()
        if self.heteroscedastic:
            self.var_weight.zero_()
            self.var_bias.fill_(_INV_SOFTPLUS_VAR_INIT)

    def _check_features(self, features: torch.Tensor) -> None:
        if features.dim() not in (2, 3) or features.shape[-1] != self.in_features:
            raise ValueError(
                f"features must have shape [B, {self.in_features}] or [B, {self.n_members}, "
                f"{self.in_features}], got {tuple(features.shape)}"
            )
        if features.dim() == 3 and features.shape[1] != self.n_members:
            raise ValueError(
                f"features has {features.shape[1]} members, the heads have {self.n_members}"
            )

    def _load_from_state_dict(self, *args, **kwargs):  # loaded weights are no initial draw
        self.fresh = False
        return super()._load_from_state_dict(*args, **kwargs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Rewards ``[B, K]`` from features ``[B, H]`` (shared) or ``[B, K, H]`` (per member)."""
        self._check_features(features)
        dtype = self.weight.dtype
        x = features.to(dtype)
        if self.hidden is None:
            if x.dim() == 2:
                return torch.addmm(self.bias, x, self.weight.t())
            return torch.einsum("bkh,kh->bk", x, self.weight) + self.bias
        if x.dim() == 2:
            z = torch.einsum("bh,khm->bkm", x, self.weight1)
        else:
            z = torch.einsum("bkh,khm->bkm", x, self.weight1)
        z = torch.tanh(z + self.bias1)
        return torch.einsum("bkm,km->bk", z, self.weight) + self.bias

    def forward_with_variance(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward means and noise variances, both ``[B, K]``, from features ``[B, H]`` or ``[B, K, H]``.

        Needs ``heteroscedastic=True``. The variance is ``softplus(v_k·x + c_k)`` clamped to
        ``[0, VAR_MAX]``, member k reading the same features as its reward head.
        """
        if not self.heteroscedastic:
            raise ValueError("forward_with_variance needs heteroscedastic heads (heteroscedastic=True)")
        mean = self.forward(features)
        x = features.to(self.var_weight.dtype)
        if x.dim() == 2:
            u = torch.addmm(self.var_bias, x, self.var_weight.t())
        else:
            u = torch.einsum("bkh,kh->bk", x, self.var_weight) + self.var_bias
        return mean, torch.clamp(F.softplus(u), max=VAR_MAX)

    def forward_masked(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Single-head rewards under T dropout masks: features ``[B, H]``, masks ``[T, H]`` -> ``[B, T]``.

        Dropping feature j of sample t is the same as zeroing column j of the head for sample t,
        so the T samples cost one ``[B, H] @ [H, T]`` matmul (linear heads) instead of T passes.
        """
        if self.n_members != 1:
            raise ValueError("forward_masked needs a single head (n_members=1)")
        x = features.to(self.weight.dtype)
        masks = masks.to(x.dtype)
        if self.hidden is None:
            w = masks * self.weight[0]  # [T, H]
            return torch.addmm(self.bias.expand(masks.shape[0]), x, w.t())
        z = torch.einsum("bh,th,hm->btm", x, masks, self.weight1[0]) + self.bias1[0]
        return torch.tanh(z) @ self.weight[0] + self.bias[0]

    def forward_masked_with_variance(
        self, features: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward_masked` plus the noise variance under the same T masks, both ``[B, T]``.

        Dropout acts on the features entering the head, so the variance head sees the masked
        features too: ``var_t = softplus((mask_t ⊙ v)·x + c)``.
        """
        if not self.heteroscedastic:
            raise ValueError("forward_masked_with_variance needs heteroscedastic heads (heteroscedastic=True)")
        mean = self.forward_masked(features, masks)
        x = features.to(self.var_weight.dtype)
        w = masks.to(x.dtype) * self.var_weight[0]  # [T, H]
        u = torch.addmm(self.var_bias.expand(masks.shape[0]), x, w.t())
        return mean, torch.clamp(F.softplus(u), max=VAR_MAX)

    def extra_repr(self) -> str:
        extra = ", heteroscedastic=True" if self.heteroscedastic else ""
        return f"in_features={self.in_features}, n_members={self.n_members}, hidden={self.hidden}{extra}"


_INV_SOFTPLUS_VAR_INIT = math.log(math.expm1(VAR_INIT))

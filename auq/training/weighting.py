"""From uncertainty to training signals: per-pair weights, label-flip rates, penalised rewards.

``uncertainty_weights`` and ``flip_rate_from_uncertainty`` feed the DPO losses of
:mod:`auq.training.losses` (``weights=``, robust DPO's ``label_smoothing``); ``penalized_reward``
turns member rewards into an uncertainty-penalised RL reward.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from auq._checks import (
    as_float_tensor,
    as_tensor_on,
    check_choice,
    check_float,
    check_labels,
    renamed_kwargs,
)

__all__ = ["flip_rate_from_uncertainty", "uncertainty_weights", "penalized_reward"]


def _inverse_binary_entropy(h: torch.Tensor, n_iter: int = 60) -> torch.Tensor:
    """``p in [0, 1/2]`` with ``H(p) = h`` (nats), by bisection; ``h`` clipped to ``[0, log 2]``."""
    h = h.clamp(0.0, math.log(2.0))
    lo = torch.zeros_like(h)
    hi = torch.full_like(h, 0.5)
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        hm = -(torch.xlogy(mid, mid) + torch.xlogy(1 - mid, 1 - mid))
        below = hm < h
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return torch.where(h > 0, (lo + hi) / 2, torch.zeros_like(h))


@renamed_kwargs(kind="input")
def flip_rate_from_uncertainty(u: Any, *, input: str = "prob", max_rate: float = 0.45) -> Any:
    """Per-pair label-flip rate ``ε`` for :func:`robust_dpo_loss`, from a model's view of each pair.

    * ``input="prob"``: ``u`` is an (ensemble) probability that the *chosen* response is preferred.
      ``ε = clip(1 - u, 0, max_rate)``: the model's probability that the recorded label is wrong,
      capped below 1/2 (where rDPO's correction diverges). This rate depends on the recorded
      label: do not feed it to :func:`robust_dpo_loss` per pair (rDPO then divides exactly the
      doubted pairs' loss by ``1 - 2ε`` and amplifies them; measured: accuracy below chance).
    * ``input="entropy"``: ``u`` is the total predictive entropy of the pair in nats (e.g.
      ``Decomposition.total``), ignoring which side the model favours. ``ε = min(H⁻¹(u), max_rate)``
      where ``H⁻¹`` maps an entropy back to the minority probability ``p <= 1/2`` with ``H(p) = u``.

    numpy in, numpy out; torch in, torch out (no gradient needed: flip rates are data).
    ``kind=`` is the deprecated name of ``input=`` (accepted with a ``FutureWarning`` for one release).

    Examples
    --------
    >>> import numpy as np
    >>> flip_rate_from_uncertainty(np.array([0.9, 0.3]))
    array([0.1 , 0.45])
    >>> flip_rate_from_uncertainty(np.array([np.log(2)]), input="entropy", max_rate=0.49).round(3)
    array([0.49])
    """
    input = check_choice(input, "input", ("prob", "entropy"))
    max_rate = check_float(max_rate, "max_rate", minimum=0.0, maximum=0.5, inclusive=(True, False))
    t, restore = as_float_tensor(u, "u")
    t = t.detach()
    if input == "prob":
        check_labels(t, "u")
        eps = (1.0 - t).clamp(0.0, max_rate)
    else:
        if bool((t < 0).any()):
            raise ValueError(f"u must be a non-negative entropy for input='entropy', got {float(t.min())!r}")
        eps = _inverse_binary_entropy(t.to(torch.float64)).clamp(max=max_rate).to(t.dtype)
    return restore(eps)


# --------------------------------------------------------------------------------------------
# uncertainty -> weights
# --------------------------------------------------------------------------------------------


@renamed_kwargs(scheme="method", tau="temperature")
def uncertainty_weights(
    u: Any,
    method: str = "exp",
    *,
    temperature: float | None = None,
    u_max: float | None = None,
    threshold: float | None = None,
    normalize: str | None = "mean",
) -> Any:
    """Map per-pair uncertainties ``u`` (larger = less trustworthy) to non-negative weights.

    Methods (before normalisation):

    * ``"exp"``: ``w = exp(-u/T)``; the temperature ``T`` (``temperature``) defaults to the mean of ``u`` (1 when it is 0).
      Measured on the demo's 521 held-out hh-rlhf pairs (weights normalised to mean 1, 10%–90%
      range): ``epistemic`` 0.18–1.74, ``ood`` 0.45–1.84, ``margin_std`` 0.41–1.61; but
      ``total`` 0.99–1.01, a no-op (entropies all near 0.68 nats, skewed): use ``"rank"`` there.
    * ``"linear"``: ``w = max(0, 1 - u/u_max)``; ``u_max`` defaults to ``max(u)`` (the most
      uncertain pair gets 0).
    * ``"threshold"``: ``w = 1[u <= threshold]`` (``threshold`` required): hard filtering.
    * ``"rank"``: ``w = 1 - rank(u)/n`` with ranks 0..n-1 from the least uncertain (ties share their
      mean rank): in ``(0, 1]``, insensitive to the scale of ``u``.

    Normalisation: ``"mean"`` (default) rescales to mean 1, so a weighted DPO loss normalised by
    ``n`` keeps the plain loss's scale and the weighted mean by ``Σw`` is unchanged; ``"sum"`` to
    sum 1; ``None`` keeps the raw map. Weights computed on the whole dataset (once) are comparable
    across batches; computing them per batch makes them batch-relative.

    numpy in, numpy out; torch in, torch out (detach ``u`` unless you mean to differentiate).
    ``scheme=`` and ``tau=`` are the deprecated names of ``method=`` and ``temperature=`` (accepted
    with a ``FutureWarning`` for one release).

    Examples
    --------
    >>> import numpy as np
    >>> uncertainty_weights(np.array([0.0, 1.0, 3.0]), "linear", normalize=None)
    array([1.        , 0.66666667, 0.        ])
    >>> uncertainty_weights(np.array([0.1, 0.5, 0.2, 0.9]), "rank", normalize=None)
    array([1.  , 0.5 , 0.75, 0.25])
    """
    method = check_choice(method, "method", ("exp", "linear", "threshold", "rank"))
    check_choice(normalize, "normalize", ("mean", "sum", None))
    t, restore = as_float_tensor(u, "u", ndim=1)
    if method == "exp":
        if temperature is None:
            m = float(t.detach().mean())
            temperature = m if m > 0 else 1.0
        temperature = check_float(temperature, "temperature", minimum=0.0, inclusive=(False, True))
        # normalisation divides out a common factor, so shift by min(u) first: exp(-u/T) of a
        # very negative u overflows to inf (NaN weights), of a large one underflows to all zeros
        shift = t.detach().min() if normalize is not None else 0.0
        w = torch.exp(-(t - shift) / temperature)
    elif method == "linear":
        if u_max is None:
            m = float(t.detach().max())
            u_max = m if m > 0 else 1.0
        u_max = check_float(u_max, "u_max", minimum=0.0, inclusive=(False, True))
        w = (1.0 - t / u_max).clamp(min=0.0)
    elif method == "threshold":
        if threshold is None:
            raise TypeError("threshold is required for method='threshold'")
        threshold = check_float(threshold, "threshold")
        w = (t <= threshold).to(t.dtype)
    else:
        n = t.shape[0]
        order = torch.argsort(t.detach(), stable=True)
        ranks = torch.empty_like(t)
        ranks[order] = torch.arange(n, dtype=t.dtype, device=t.device)
        # ties share their mean rank
        uniq, inverse = torch.unique(t.detach(), return_inverse=True)
        mean_rank = torch.zeros(uniq.shape[0], dtype=t.dtype, device=t.device).index_add_(0, inverse, ranks)
        counts = torch.bincount(inverse, minlength=uniq.shape[0]).to(t.dtype)
        w = 1.0 - (mean_rank / counts)[inverse] / n
    if normalize is not None:
        s = w.sum()
        if not float(s.detach()) > 0:
            raise ValueError(
                f"all weights are zero under method={method!r}; nothing to normalise (check threshold/u_max)"
            )
        w = w / (s / w.shape[0] if normalize == "mean" else s)
    return restore(w)


# --------------------------------------------------------------------------------------------
# penalised rewards for RL
# --------------------------------------------------------------------------------------------


def penalized_reward(
    member_rewards: Any,
    method: str = "mean",
    coef: float = 1.0,
    center: bool = True,
    member_offsets: Any = None,
) -> Any:
    """Conservative reward from an ensemble's member rewards, for RL against a reward model.

    ``member_rewards`` is ``[n, K]`` (n responses, K members; 1-D is one member). BT rewards are
    identified only up to a constant per member, so members are centred first: with
    ``center=True`` each member's mean over the ``n`` responses of *this call* is subtracted (pass a
    reasonably large batch, or the members' means on a reference set as ``member_offsets`` ``[K]``,
    which is then subtracted instead; ``center=False`` uses the raw rewards). Then, per response:

    * ``"mean"``: ``mean_k r_k``
    * ``"lcb"``: ``mean - λ·std`` (lower confidence bound)
    * ``"wco"``: ``min_k r_k`` (worst-case optimisation, Coste et al. 2023)
    * ``"uwo"``: ``mean - λ·var`` (uncertainty-weighted optimisation, Coste et al. 2023)

    ``std``/``var`` are over members with ``ddof=0`` (one member: 0, never NaN); ``λ = coef >= 0``.
    numpy in, numpy out; torch in, torch out (differentiable).

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1.0, 3.0], [3.0, 1.0]])
    >>> penalized_reward(r, "lcb", coef=1.0)   # centred: [[-1, 1], [1, -1]], mean 0, std 1
    array([-1., -1.])
    """
    method = check_choice(method, "method", ("mean", "lcb", "wco", "uwo"))
    coef = check_float(coef, "coef", minimum=0.0)
    r, restore = as_float_tensor(member_rewards, "member_rewards", ndim=(1, 2))
    if r.ndim == 1:
        r = r[:, None]
    if member_offsets is not None:
        off = as_tensor_on(member_offsets, "member_offsets", like=r, ndim=(0, 1)).to(r.dtype)
        if off.ndim == 1 and off.shape[0] != r.shape[1]:
            raise ValueError(
                f"member_offsets must have one value per member ({r.shape[1]}), got {off.shape[0]}"
            )
        r = r - off
    elif center:
        r = r - r.mean(dim=0, keepdim=True)
    mean = r.mean(dim=1)
    if method == "mean":
        out = mean
    elif method == "lcb":
        out = mean - coef * r.std(dim=1, correction=0)
    elif method == "wco":
        out = r.min(dim=1).values
    else:
        out = mean - coef * r.var(dim=1, correction=0)
    return restore(out)

"""Uncertainty decomposition of pairwise preferences from member margins."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from auq._checks import as_float_tensor, is_tensor
from auq._math import log_sigmoid_pair, probit_scaled_logit, xlogx
from auq.estimators._common import (
    as_tensor_pair,
    check_unit,
    compute_dtype,
    population_std,
    restore_torch,
    to_numpy_column,
    to_unit,
)

__all__ = ["Decomposition", "decompose"]


@dataclass(frozen=True, eq=False)
class Decomposition:
    """Per-pair uncertainty of a preference judgement by an ensemble (or MC-dropout samples).

    Every array field has shape ``[n_pairs]`` and the type of the input (NumPy float64 for NumPy or
    list input; a torch tensor on the input's device and dtype for tensor input).

    Two views, answering two questions:

    * **Entropy view** (``prob``, ``total``, ``aleatoric``, ``epistemic``): *how sure is the model
      about which response is preferred?* ``total = aleatoric + epistemic``. These terms describe
      the *preference* and shrink as margins grow, whatever the members' disagreement about the
      rewards themselves; out-of-domain pairs often have large margins, so a small epistemic term
      is no evidence that a pair is in-domain.
    * **Variance view** (``margin_mean``, ``margin_std``): the members' mean margin and its spread,
      in reward units. For *is this response out of domain?* use the per-response reward spread
      (:func:`auq.estimators.response_reward_stats`, :func:`auq.estimators.pair_reward_stats`).

    Attributes
    ----------
    prob : array
        Mean member probability that the chosen response is preferred, ``mean_k p_k`` with
        ``p_k = σ(m_k)`` (``σ(probit_scaled_logit(m_k, v_k))`` with a learned noise variance).
    total : array
        Entropy of ``prob`` (predictive uncertainty).
    aleatoric : array
        Mean member entropy ``mean_k H(p_k)`` (expected data uncertainty).
    epistemic : array
        ``total - aleatoric``: the mutual information between the label and the member (BALD);
        ``>= 0``, exactly 0 for one member.
    margin_mean : array
        Mean member margin ``mean_k m_k``.
    margin_std : array
        Population standard deviation of the member margins (``ddof=0``: the members are the whole
        ensemble, not a sample from one); 0 for one member.
    unit : str
        ``"nats"`` or ``"bits"``: the unit of ``total``, ``aleatoric`` and ``epistemic``.
    n_members : int
        Number of members (columns) the decomposition was computed from.
    """

    prob: Any
    total: Any
    aleatoric: Any
    epistemic: Any
    margin_mean: Any
    margin_std: Any
    unit: str = "nats"
    n_members: int = 1

    _ARRAY_FIELDS: ClassVar[tuple[str, ...]] = (
        "prob",
        "total",
        "aleatoric",
        "epistemic",
        "margin_mean",
        "margin_std",
    )

    def __len__(self) -> int:
        return int(self.prob.shape[0])

    def to_pandas(self):
        """One row per pair, one column per array field.

        Examples
        --------
        >>> decompose([[2.0, -2.0]]).to_pandas().columns.tolist()
        ['prob', 'total', 'aleatoric', 'epistemic', 'margin_mean', 'margin_std']
        """
        import pandas as pd

        return pd.DataFrame(
            {name: to_numpy_column(getattr(self, name)) for name in self._ARRAY_FIELDS}
        )

    def __repr__(self) -> str:
        names = [f.name for f in fields(self)]
        return (
            f"Decomposition(n_pairs={len(self)}, n_members={self.n_members}, unit={self.unit!r}, "
            f"fields={names[:6]})"
        )


_CHUNK_ROWS = 16384


def _decompose_margins(m: torch.Tensor, v: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """prob, total, aleatoric, epistemic, margin_mean, margin_std (nats) of margins ``[n, K]``.

    ``v`` (``[n, K]`` or ``[n, 1]``): the pairs' noise variances; member k's logit is then
    ``probit_scaled_logit(m_k, v_k)``.
    """
    n_members = int(m.shape[1])
    z = m if v is None else probit_scaled_logit(m, v)
    # One exp and one log1p per member logit; prob and 1 - prob are both means of accurately
    # computed sigmoids, so neither loses precision to cancellation (no clipping anywhere).
    log_p_k, log_q_k = log_sigmoid_pair(z)
    p_k, q_k = torch.exp(log_p_k), torch.exp(log_q_k)
    aleatoric = -(p_k * log_p_k + q_k * log_q_k).mean(dim=1)
    prob = p_k.mean(dim=1)
    total = -(xlogx(prob) + xlogx(q_k.mean(dim=1)))
    if n_members == 1:
        # H(mean) and mean H are the same number; make the identity exact, not merely close.
        total = aleatoric
        epistemic = torch.zeros_like(aleatoric)
        margin_std = torch.zeros_like(aleatoric)
    else:
        # Jensen: total >= aleatoric; only rounding (~1e-16 relative) can make the difference < 0.
        epistemic = torch.clamp_min(total - aleatoric, 0.0)
        margin_std = population_std(m, dim=1)
    return prob, total, aleatoric, epistemic, m.mean(dim=1), margin_std


def _noise_var_like(m: torch.Tensor, noise_var: Any, restore: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Validate ``noise_var`` against the margins ``m``; tensor output when either is a tensor."""
    margins_are_tensor = restore is restore_torch or getattr(restore, "kind", None) == "torch"
    if is_tensor(noise_var) and not margins_are_tensor:
        v, _ = as_float_tensor(noise_var, "noise_var", ndim=(1, 2))
        m = m.to(device=v.device)
        restore = restore_torch
    else:
        v, _ = as_float_tensor(noise_var, "noise_var", ndim=(1, 2), like=m)
        v = v.to(m.device)
    n = m.shape[0]
    if not (tuple(v.shape) == tuple(m.shape) or (v.ndim == 1 and v.shape[0] == n)):
        raise ValueError(
            f"noise_var must have the margins' shape {tuple(m.shape)} or [{n}], got {tuple(v.shape)}"
        )
    if bool((v < 0).any()):
        raise ValueError(f"noise_var must be non-negative, got a value of {float(v.min())!r}")
    dtype = torch.promote_types(m.dtype, v.dtype)
    return m.to(dtype), v.to(dtype), restore


def decompose(
    margins_or_rewards_chosen: Any,
    rewards_rejected: Any = None,
    *,
    unit: str = "nats",
    noise_var: Any = None,
) -> Decomposition:
    """Decompose each pair's preference uncertainty into aleatoric and epistemic parts.

    With one argument it is the member margins ``m[i, k] = r_k(chosen_i) - r_k(rejected_i)``,
    shape ``[n_pairs, n_members]``; with two it is the member rewards of the chosen and the
    rejected responses (same shape) and ``m = rewards_chosen - rewards_rejected``. A 1-D input is
    one member. Member ``k``'s preference probability is ``p_k = σ(m_k)``.

    With ``noise_var`` (a learned per-pair noise variance ``v_k = var_k(chosen) + var_k(rejected)``
    from heteroscedastic heads) each member's reward is Gaussian and
    ``p_k = σ(probit_scaled_logit(m_k, v_k)) = σ(m_k / sqrt(1 + π·v_k/8))``: the aleatoric term then
    grows with the noise the model learned for that pair, not only as the margin shrinks.
    ``noise_var=None`` or zeros gives exactly the plain decomposition.

    Entropy view -- *how uncertain is the preference?*  ``prob = mean_k p_k``,
    ``total = H(prob)``, ``aleatoric = mean_k H(p_k)``, ``epistemic = total - aleatoric`` (the
    mutual information, BALD). Everything is computed in log-space from the margins
    (``logσ(±m_k)`` from one ``exp`` and one ``log1p``; ``prob`` and ``1 - prob`` as means of
    those sigmoids, without cancellation), so margins of ±1e4 give finite, exact results in float32 and float64. The entropy
    terms describe the preference: they shrink as margins grow, even for out-of-domain pairs
    where the members disagree about the rewards.

    Variance view -- *how much do the members disagree about the margin?*  ``margin_mean`` and
    ``margin_std`` (population std, ``ddof=0``) over members, in reward units. To flag
    out-of-domain *responses*, use the per-response reward std of
    :func:`response_reward_stats` / :func:`pair_reward_stats` instead.

    One implementation serves NumPy and torch: NumPy or list input gives NumPy float64 fields;
    a tensor gives tensors on its device and dtype (float16/bfloat16 computed in float32 and cast
    back), differentiable, so losses can use them.

    Parameters
    ----------
    margins_or_rewards_chosen : array-like or torch.Tensor, shape [n_pairs, n_members] or [n_pairs]
        Member margins, or (with ``rewards_rejected``) member rewards of the chosen responses.
    rewards_rejected : array-like or torch.Tensor, optional
        Member rewards of the rejected responses, same shape as ``margins_or_rewards_chosen``.
    unit : {"nats", "bits"}, default "nats"
        Unit of the entropy terms (bits = nats / ln 2). Margins are unaffected.
    noise_var : array-like or torch.Tensor, optional
        Non-negative, finite noise variance of each pair's margin: the margins' shape, or
        ``[n_pairs]`` (shared by all members). A tensor gives tensor output, differentiable in it.

    Returns
    -------
    Decomposition

    Raises
    ------
    ValueError
        NaN/inf, empty or non 1-/2-D input, shapes that differ, an unknown ``unit``, or a
        negative ``noise_var``.

    Examples
    --------
    >>> d = decompose([[2.0, -2.0], [3.0, 3.0]])
    >>> d.prob.round(4).tolist(), d.epistemic.round(4).tolist()
    ([0.5, 0.9526], [0.3278, 0.0])
    >>> d = decompose([[1.0, 2.0]], [[0.0, 0.0]], unit="bits")  # rewards of chosen and rejected
    >>> float(d.margin_mean[0]), float(d.margin_std[0])
    (1.5, 0.5)
    >>> d = decompose([[2.0, 2.0]], noise_var=[[0.0, 8.0 / 3.141592653589793]])  # learned noise
    >>> d.prob.round(4).tolist()  # (σ(2) + σ(2/√2)) / 2
    [0.8426]
    """
    unit = check_unit(unit)
    if rewards_rejected is None:
        m, restore = as_float_tensor(margins_or_rewards_chosen, "margins", ndim=(1, 2))
    else:
        chosen, rejected, restore = as_tensor_pair(
            margins_or_rewards_chosen,
            rewards_rejected,
            "rewards_chosen",
            "rewards_rejected",
            ndim=(1, 2),
        )
        m = chosen - rejected
    v = None
    if noise_var is not None:
        m, v, restore = _noise_var_like(m, noise_var, restore)
    out_dtype = m.dtype
    m = m.to(compute_dtype(m))
    if m.ndim == 1:
        m = m.unsqueeze(1)
    n_members = int(m.shape[1])
    if v is not None:
        v = v.to(m.dtype)
        v = v.unsqueeze(1) if v.ndim == 1 else v

    grad = m.requires_grad or (v is not None and v.requires_grad)
    if grad or m.shape[0] <= _CHUNK_ROWS:
        prob, total, aleatoric, epistemic, margin_mean, margin_std = _decompose_margins(m, v)
    else:
        # Without gradients, work through cache-sized blocks of pairs: the same arithmetic, a
        # fraction of the memory traffic (measured 2.5x faster at 10^6 x 8 on 2 CPU cores).
        blocks_v = [None] * len(range(0, m.shape[0], _CHUNK_ROWS)) if v is None else torch.split(v, _CHUNK_ROWS)
        with torch.no_grad():
            parts = [
                _decompose_margins(block, vb)
                for block, vb in zip(torch.split(m, _CHUNK_ROWS), blocks_v)
            ]
        prob, total, aleatoric, epistemic, margin_mean, margin_std = (
            torch.cat(cols) for cols in zip(*parts)
        )

    def out(t: torch.Tensor) -> Any:
        return restore(t.to(out_dtype))

    return Decomposition(
        prob=out(prob),
        total=out(to_unit(total, unit)),
        aleatoric=out(to_unit(aleatoric, unit)),
        epistemic=out(to_unit(epistemic, unit)),
        margin_mean=out(margin_mean),
        margin_std=out(margin_std),
        unit=unit,
        n_members=n_members,
    )

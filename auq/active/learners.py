"""Models that an active-learning loop refits on cached features every round.

A *learner* is any object with two methods (duck-typed; these two classes are auq's):

``fit(features_a, features_b, targets)``
    refit from scratch on the labelled pairs (``[n, H]`` pooled trunk features of the two sides,
    ``targets`` ``[n]`` = probability that side ``a`` is preferred);
``predict(features_a, features_b) -> dict``
    ``"rewards_a"``, ``"rewards_b"`` (member rewards ``[n, K]``, NumPy float64) and ``"prob"``
    (``[n]``, the model's probability that ``a`` is preferred); optionally ``"margin_mean"`` and
    ``"margin_var"`` (a Gaussian predictive of the margin, for ``acquisition="information_gain"``).

:class:`LaplaceLearner` wraps :class:`auq.models.LaplaceRewardModel` (closed-form fit, about a
second on 384-dimensional features); :class:`HeadsLearner` trains the reward heads of a
frozen-trunk :class:`auq.models.RewardEnsemble` (``kind="heads"``) on features, to convergence.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from auq._checks import as_float_array, check_float, check_int
from auq.models import LaplaceRewardModel
from auq.models._heads import MemberHeads
from auq.training._batching import bootstrap_counts
from auq.training._spread import anchor_penalty, draw_anchors_from_prior
from auq.training.losses import bradley_terry_loss

logger = logging.getLogger(__name__)

__all__ = ["HeadsLearner", "LaplaceLearner", "check_pair_features"]


def check_pair_features(features_a: Any, features_b: Any, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Both sides' features as float64 ``[n, H]`` arrays of one shape (errors name ``name``)."""
    a = as_float_array(features_a, f"{name}_a", ndim=2)
    b = as_float_array(features_b, f"{name}_b", ndim=2)
    if a.shape != b.shape:
        raise ValueError(f"{name}_a and {name}_b must have the same shape, got {a.shape} and {b.shape}")
    return a, b


class LaplaceLearner:
    """Refit a :class:`~auq.models.LaplaceRewardModel` on labelled features each round.

    ``fit`` is :meth:`~auq.models.LaplaceRewardModel.fit_features` (the model's own ``rank`` and
    ``prior_precision``, by default chosen by the evidence); ``predict`` gives the ``K`` posterior
    draws as member rewards and the exact Gaussian margin (``prob`` is its probit predictive).

    Examples
    --------
    >>> learner = LaplaceLearner(LaplaceRewardModel.from_backbone(path))  # doctest: +SKIP
    >>> learner.fit(fa[:20], fb[:20], np.ones(20))                         # doctest: +SKIP
    >>> learner.predict(fa, fb)["margin_var"].shape                        # doctest: +SKIP
    (1734,)
    """

    def __init__(self, model: LaplaceRewardModel):
        if not isinstance(model, LaplaceRewardModel):
            raise TypeError(f"model must be a LaplaceRewardModel, got {type(model).__name__}")
        self.model = model

    def fit(self, features_a: Any, features_b: Any, targets: Any) -> None:
        a, b = check_pair_features(features_a, features_b)
        self.model.fit_features(a, b, targets=as_float_array(targets, "targets", ndim=1))

    @torch.no_grad()
    def predict(self, features_a: Any, features_b: Any) -> dict[str, np.ndarray]:
        a, b = check_pair_features(features_a, features_b)
        pred = self.model.predict_pairs(a, b)
        dev = self.model.feature_mean.device
        ra, rb = (self.model.forward_features(torch.from_numpy(x).to(dev)).cpu().numpy() for x in (a, b))
        out = {"rewards_a": ra, "rewards_b": rb}
        out.update({k: pred[k].cpu().numpy() for k in ("prob", "margin_mean", "margin_var")})
        return out


class HeadsLearner:
    """Train K anchored, bootstrapped reward heads on features, to convergence, every round.

    Member ``k`` minimises its own MAP objective (the one :class:`auq.training.RewardModelTrainer`
    uses with ``prior_precision`` and ``bootstrap=True``)

    ``(1/N) Σ_i c_ik·ℓ_i(θ_k) + λ/(2N)·||θ_k - θ_k⁰||²``

    with ``ℓ`` the Bradley-Terry loss (:func:`auq.training.bradley_terry_loss`), ``c_ik`` the
    bootstrap counts of the ``N`` labelled pairs (:func:`auq.training._batching.bootstrap_counts`)
    and ``θ_k⁰`` member ``k``'s anchor, a draw from the prior ``N(0, 1/λ)``. Every fit starts from
    the anchors and runs full-batch L-BFGS in float64 until the gradient vanishes, so the spread
    of the members depends on the labels, not on how long an optimiser ran.

    Parameters
    ----------
    model : RewardEnsemble, RewardModel or MemberHeads
        A frozen-trunk ``RewardEnsemble(kind="heads")`` or ``RewardModel``, whose rewards are
        ``heads(features)``, or the :class:`~auq.models.MemberHeads` themselves; the heads are
        trained in place, so the model scores with them afterwards. Heteroscedastic heads, MC
        dropout and per-member trunks are not supported.
    prior_precision : float, default 30.0
        ``λ`` (the trainer's heads recipe value).
    bootstrap : bool, default True
        Per-member bootstrap counts (False: every member sees every pair once).
    seed : int, default 0
        Seed of the anchors (``heads.reset_parameters(seed)``) and of the bootstrap counts.
    max_iter : int, default 500
        L-BFGS iterations per fit.

    Examples
    --------
    >>> learner = HeadsLearner(MemberHeads(4, 3), prior_precision=1.0)
    >>> learner.fit(np.eye(4), -np.eye(4), np.ones(4))
    >>> learner.predict(np.eye(4), -np.eye(4))["rewards_a"].shape
    (4, 3)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        prior_precision: float = 30.0,
        bootstrap: bool = True,
        seed: int = 0,
        max_iter: int = 500,
    ):
        heads = model if isinstance(model, MemberHeads) else getattr(model, "heads", None)
        kind = getattr(getattr(model, "config", None), "kind", None)
        if not isinstance(heads, MemberHeads) or not (model is heads or kind in ("heads", "single")):
            raise TypeError(
                "model must be MemberHeads, a RewardModel or a RewardEnsemble(kind='heads') (rewards = "
                f"heads(features)), got {type(model).__name__}" + (f" of kind {kind!r}" if kind else "")
            )
        if heads.heteroscedastic:
            raise ValueError("model: heteroscedastic heads are not supported by HeadsLearner")
        if getattr(model, "trunk_frozen", True) is False:
            raise ValueError("model: the trunk must be frozen (features are cached, only the heads train)")
        self.model = model
        self.heads = heads
        self.prior_precision = check_float(prior_precision, "prior_precision", minimum=0.0, inclusive=(False, True))
        self.bootstrap = bool(bootstrap)
        self.seed = check_int(seed, "seed", minimum=0)
        self.max_iter = check_int(max_iter, "max_iter", minimum=1)
        with torch.no_grad():
            heads.reset_parameters(self.seed)
            draw_anchors_from_prior(heads, self.prior_precision)
        self.anchors = {n: p.detach().to("cpu", torch.float64).clone() for n, p in heads.named_parameters()}

    def _rewards(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.heads, params, (x,))

    def fit(self, features_a: Any, features_b: Any, targets: Any) -> None:
        a, b = check_pair_features(features_a, features_b)
        t = torch.from_numpy(as_float_array(targets, "targets", ndim=1))
        n, k = a.shape[0], self.heads.n_members
        if t.shape[0] != n:
            raise ValueError(f"targets must have one value per pair ({n}), got {t.shape[0]}")
        x = torch.from_numpy(np.concatenate([a, b]))  # one forward for both sides
        counts = (torch.from_numpy(bootstrap_counts(n, k, self.seed)).double() if self.bootstrap
                  else torch.ones(n, k, dtype=torch.float64))
        params = {name: p.clone().requires_grad_(True) for name, p in self.anchors.items()}
        opt = torch.optim.LBFGS(list(params.values()), lr=1.0, max_iter=self.max_iter, tolerance_grad=1e-9,
                                tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            r = self._rewards(params, x)
            loss = bradley_terry_loss(r[:n], r[n:], targets=t, weights=counts, reduction="sum") / n
            loss = loss + anchor_penalty(params, self.anchors, self.prior_precision, n, k)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            for name, p in self.heads.named_parameters():
                p.copy_(params[name].detach().to(p))
        self.heads.fresh = False
        if getattr(self.model, "reward_offsets", None) is not None:
            self.model.reward_offsets = None  # offsets of the previous heads would shift the rewards

    @torch.no_grad()
    def predict(self, features_a: Any, features_b: Any) -> dict[str, np.ndarray]:
        a, b = check_pair_features(features_a, features_b)
        params = {n: p.detach().to("cpu", torch.float64) for n, p in self.heads.named_parameters()}
        ra, rb = (self._rewards(params, torch.from_numpy(x)).numpy() for x in (a, b))
        prob = torch.sigmoid(torch.from_numpy(ra - rb)).mean(1).numpy()
        return {"rewards_a": ra, "rewards_b": rb, "prob": prob}

"""Uncertainty for the reward model you already have: a Bayesian last layer over its own head.

:class:`WrappedLaplaceRewardModel` takes a trained single-logit
``AutoModelForSequenceClassification`` (wrapped by :class:`~auq.models.SequenceClassifierRewardModel`,
nothing retrained) and puts a Laplace posterior on the weights of **its own final linear layer**
(``score`` / ``classifier``), fitted in closed form on a preference set. The features are what
that layer consumes (the classifier's penultimate hidden state: GPT-2's last non-pad token state,
BERT's pooler output, ...), captured while the checkpoint runs as it always does.

The prior is centred on the trained head
-----------------------------------------
With head ``r(x) = w_h·f(x) + b_h``, the prior is ``w ~ N(w_h, α⁻¹ I)`` (``α`` chosen by the
evidence unless given) and the reward of a weight vector ``w`` is

    r_w(x) = w·(f(x) - μ) + (w_h·μ + b_h),

with ``μ`` the mean feature of the training responses. So

* at ``w = w_h`` it is the checkpoint's own logit, exactly: the prior mean *is* the model;
* the posterior mean moves away from ``w_h`` only along the ``rank`` principal directions of the
  training features, where the preferences speak; along every other direction it stays ``w_h``
  (:func:`~auq.models.fit_laplace_posterior` with ``prior_mean``). A response whose centred
  feature lies outside the fitted directions gets the model's own logit as posterior-mean reward,
  and the prior variance ``α⁻¹|f - μ|²`` as epistemic variance;
* members (posterior draws) agree at ``f = μ`` (anchored at the training data: a Bradley-Terry
  reward is defined up to a constant, which the head's ``w_h·μ + b_h`` fixes).

Why centred on the head rather than on zero (as :class:`~auq.models.LaplaceRewardModel`, which
has no trained head): a zero-mean prior would shrink the trained head towards 0 and replace the
model's rewards by those of a head refitted on the (usually much smaller) preference set; the
centred prior keeps the model's rewards and adds the uncertainty the preference set can measure.

Measured on real data (``benchmarks/wrapped_laplace.py``: MiniLM ``BertForSequenceClassification``
whose head was trained on 40% of the bundled hh-rlhf pairs, wrapped, the Laplace layer and density
fitted on another 30%, 3 splits): telling MT-Bench pairs from held-out hh-rlhf pairs, AUROC 0.76
for the per-response posterior variance, 0.92 for the feature density, 0.54 for the checkpoint's
own preference entropy (the baseline); held-out accuracy and NLL unchanged (0.567 / 0.681 against
the checkpoint's 0.566 / 0.681). When the preference set agrees with the head the evidence can
push ``α`` to its bound (the posterior stays on the head, its variance tiny though still
ranked by ``|f - μ|``): give ``prior_precision`` where the variance's scale matters.

Caching: the features (the head's input) do not depend on the head, so the feature cache's key
(:func:`auq.models._features.trunk_fingerprint`) leaves the head out: classifiers sharing a trunk
share cached features; rewards are never cached (always ``forward_features`` of the model at hand).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch

from auq._checks import check_int

from ._base import _MODEL_CLASSES, BaseRewardModel, _check_seed
from ._config import RewardModelConfig
from ._laplace import LaplaceRewardModel
from ._laplace_math import LaplacePosterior, check_prior_precision
from ._wrapped import MEMBERS_DIR, SequenceClassifierRewardModel

logger = logging.getLogger(__name__)

__all__ = ["WrappedLaplaceRewardModel"]


class WrappedLaplaceRewardModel(LaplaceRewardModel):
    """A Laplace posterior over a trained sequence classifier's own head, centred on it.

    Parameters
    ----------
    wrapped : SequenceClassifierRewardModel
        One wrapped checkpoint (``n_members == 1``); its modules are shared, not copied.
    n_samples : int, default 32
        Posterior draws used as reward columns.
    prior_precision : float or "auto", default "auto"
        ``α`` of the prior ``N(w_head, α⁻¹ I)``; ``"auto"`` maximises the Laplace evidence.
    rank : int or None, default 64
        Principal directions of the training features the likelihood is fitted on (see
        :class:`~auq.models.LaplaceRewardModel`); elsewhere the posterior is the prior.
    seed : int, default 0
        Seed of the posterior draws.

    Attributes
    ----------
    head_weight, head_bias : torch.Tensor
        float64 copies of the head's weights (the prior mean) and bias, taken at construction.

    Examples
    --------
    >>> rm = LaplaceRewardModel.from_sequence_classifier("my-reward-model")  # doctest: +SKIP
    >>> rm.fit(train_pairs)  # closed form, the classifier is not retrained  # doctest: +SKIP
    >>> preds = score(rm, test_pairs)  # doctest: +SKIP
    >>> mean, var = rm.predictive_reward(rm.encode(input_ids, attention_mask))  # doctest: +SKIP
    """

    def __init__(
        self,
        wrapped: SequenceClassifierRewardModel,
        *,
        n_samples: int = 32,
        prior_precision: float | str = "auto",
        rank: int | None = 64,
        seed: int = 0,
    ):
        if not isinstance(wrapped, SequenceClassifierRewardModel):
            raise TypeError(f"wrapped must be a SequenceClassifierRewardModel, got {type(wrapped).__name__}")
        if wrapped.n_members != 1:
            raise ValueError(
                f"wrapped has {wrapped.n_members} checkpoints; a Laplace last layer goes over one "
                "classifier's head (wrap each checkpoint on its own)"
            )
        n_samples = check_int(n_samples, "n_samples", minimum=1)
        prior_precision = check_prior_precision(prior_precision)
        rank = None if rank is None else check_int(rank, "rank", minimum=1)
        head = wrapped.heads[0]
        wcfg = wrapped.config
        config = RewardModelConfig(
            auq_model_type="wrapped_laplace",
            kind="laplace",
            n_members=n_samples,
            backbone=wcfg.backbone,
            backbone_model_type=wcfg.backbone_model_type,
            pooling=wcfg.pooling,
            hidden_size=int(head.in_features),
            seed=_check_seed(seed),
            train_trunk=False,
            max_length=wcfg.max_length,
            n_samples=n_samples,
            prior_precision=prior_precision,
            rank=rank,
        )
        BaseRewardModel.__init__(self, config, wrapped.tokenizer)
        self.wrapped = wrapped
        self._register_posterior_buffers(config.hidden_size, n_samples)
        f64 = torch.float64
        self.register_buffer("head_weight", head.weight.detach()[0].to(f64).clone())
        bias = head.bias.detach()[0].to(f64).clone() if head.bias is not None else torch.zeros((), dtype=f64)
        self.register_buffer("head_bias", bias.reshape(()))

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_wrapped(cls, wrapped: SequenceClassifierRewardModel, **kwargs: Any) -> WrappedLaplaceRewardModel:
        """Same as the constructor (``wrapped.laplace(...)`` calls it)."""
        return cls(wrapped, **kwargs)

    # -- the wrapped checkpoint -------------------------------------------------------------
    def _trunk_modules(self) -> list[torch.nn.Module]:
        return self.wrapped._trunk_modules()

    def _fingerprint_skip(self) -> set[str]:
        return self.wrapped._fingerprint_skip()

    def _backbone_config(self) -> Any:
        return self.wrapped._backbone_config()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The head's input ``[B, H]``: the checkpoint's own pooled penultimate features."""
        return self.wrapped.encode(input_ids, attention_mask)

    def _prior_mean(self) -> torch.Tensor:
        return self.head_weight

    def _constant(self) -> torch.Tensor:
        """``w_h·μ + b_h``: the head's reward at the training mean feature."""
        return self.head_weight @ self.feature_mean + self.head_bias

    # -- rewards ----------------------------------------------------------------------------
    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """Rewards of the K posterior draws ``[B, K] = (f - μ) @ Wᵀ + w_h·μ + b_h`` (float64)."""
        return super().forward_features(features) + self._constant()

    def predictive_reward(self, features: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean ``w*·(f - μ) + w_h·μ + b_h`` and variance ``(f - μ)ᵀ Σ (f - μ)`` per response.

        Where ``f - μ`` is outside the fitted directions the mean is the checkpoint's own logit.
        """
        mean, var = super().predictive_reward(features)
        return mean + self._constant(), var

    def own_reward(self, features: Any) -> torch.Tensor:
        """The checkpoint's own logit ``w_h·f + b_h`` (float64) from its features: the prior mean."""
        return self._features(features, "features") @ self.head_weight + self.head_bias

    # -- fitting on a preference set ----------------------------------------------------------
    def fit(
        self,
        dataset: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        progress: bool = True,
        collator: Any = None,
        feature_cache: Any = None,
        fit_uncertainty: bool = True,
    ) -> LaplacePosterior:
        """Fit the posterior (and the feature density) on preference pairs; nothing is retrained.

        One pass of the checkpoint over ``dataset`` (none for pairs already in ``feature_cache``)
        gives the head's input features of both sides; the posterior is fitted on them with the
        dataset's soft targets and weights when it has them (:meth:`fit_features`). With
        ``fit_uncertainty`` the feature density and the members' training reward offsets are
        fitted on the same features (:meth:`fit_uncertainty_from_features`, ``strict=False``).

        Parameters
        ----------
        dataset : PreferenceDataset
        batch_size, device, progress, collator
            As for :func:`~auq.models.score`.
        feature_cache : str, path or FeatureCache, optional
            Read / store the features there (:class:`~auq.models.FeatureCache`).
        fit_uncertainty : bool, default True

        Returns
        -------
        LaplacePosterior
        """
        from ._features import cached_pair_features
        from ._scoring import encode_dataset

        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if feature_cache is not None:
            fc, fr = cached_pair_features(
                feature_cache, self, dataset, collator=collator, batch_size=batch_size, device=device, progress=progress
            )
        else:
            fc, fr = encode_dataset(self, dataset, batch_size=batch_size, device=device, progress=progress, collator=collator)
        targets = getattr(dataset, "targets", None)
        weights = getattr(dataset, "weights", None)
        post = self.fit_features(fc, fr, targets=targets, weights=weights)
        if fit_uncertainty:
            with torch.no_grad():
                rc = self.forward_features(self._features(fc, "features_chosen")).cpu().numpy()
                rr = self.forward_features(self._features(fr, "features_rejected")).cpu().numpy()
            self.fit_uncertainty_from_features(fc, fr, rc, rr, strict=False)
        return post

    # -- checkpointing ----------------------------------------------------------------------
    def _write_extra(self, directory: str) -> list[str]:
        return self.wrapped._write_extra(directory)

    @classmethod
    def _expected_files(cls, config: RewardModelConfig) -> list[str]:
        return super()._expected_files(config) + [
            os.path.join(MEMBERS_DIR, "0", "config.json"),
            os.path.join(MEMBERS_DIR, "sources.json"),
        ]

    @classmethod
    def _build_from_saved(cls, directory, config, backbone_config, tokenizer, trust_remote_code):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        cfg = AutoConfig.from_pretrained(os.path.join(directory, MEMBERS_DIR, "0"), trust_remote_code=trust_remote_code)
        classifier = AutoModelForSequenceClassification.from_config(cfg, trust_remote_code=trust_remote_code)
        with open(os.path.join(directory, MEMBERS_DIR, "sources.json"), encoding="utf-8") as fh:
            sources = json.load(fh).get("sources")
        wrapped = SequenceClassifierRewardModel([classifier], tokenizer, names=sources)
        wrapped.config.max_length = config.max_length
        model = cls(
            wrapped, n_samples=config.n_samples, prior_precision=config.prior_precision, rank=config.rank,
            seed=config.seed,
        )
        model._load_weights_file(directory)
        return model


_MODEL_CLASSES["wrapped_laplace"] = WrappedLaplaceRewardModel

"""Learned aleatoric noise: the model side of heteroscedastic (Gaussian Bradley-Terry) reward heads.

A heteroscedastic model (``heteroscedastic=True``) gives every response, per member, a reward mean
and a noise variance: the reward is ``N(mean, var)``, so a pair's preference probability is
``σ(probit_scaled_logit(mean_c - mean_r, var_c + var_r))``. ``forward`` keeps returning the means
``[B, K]``; the methods here also return the variances.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["HeteroscedasticMixin", "check_heteroscedastic"]


def check_heteroscedastic(value: Any) -> bool:
    """``heteroscedastic`` must be a bool (not a string such as ``"false"``)."""
    if not isinstance(value, bool):
        raise TypeError(f"heteroscedastic must be True or False, got {value!r}")
    return value


class HeteroscedasticMixin:
    """``forward_with_variance`` / ``forward_features_with_variance`` for models with ``self.heads``."""

    @property
    def heteroscedastic(self) -> bool:
        """True when the heads also learn a per-response noise variance."""
        return bool(getattr(self.config, "heteroscedastic", False))

    def forward_features_with_variance(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Member reward means and noise variances, both ``[B, n_members]``, from ``encode``'s features.

        Raises
        ------
        ValueError
            The model is not heteroscedastic (it has no variance heads).

        Examples
        --------
        >>> rewards, noise_var = model.forward_features_with_variance(feats)  # doctest: +SKIP
        """
        if not self.heteroscedastic:
            raise ValueError(
                f"{type(self).__name__} was built with heteroscedastic=False: it has no noise variance"
            )
        return self.heads.forward_with_variance(features)

    def forward_with_variance(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Member reward means and noise variances, both ``[B, n_members]``, from token ids.

        The pair-level noise variance to pass to :func:`auq.estimators.decompose` or
        :func:`auq.training.losses.bradley_terry_loss` is ``var_chosen + var_rejected``.

        Examples
        --------
        >>> rewards, noise_var = model.forward_with_variance(input_ids, attention_mask)  # doctest: +SKIP
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.forward_features_with_variance(self.encode(input_ids, attention_mask))

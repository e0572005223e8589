"""Feature-space density: the out-of-distribution score that a reward model carries with it.

A Gaussian fitted to the pooled features of the training responses (the features the reward head
sees: prompt + response text, so it flags unfamiliar *prompts* as well as unfamiliar responses).
Its Mahalanobis distance is the per-response out-of-distribution signal that works on real data
(hh-rlhf vs MT-Bench with frozen MiniLM features: AUROC about 0.9, where the ensemble's
uncertainty terms give about 0.5).

Distances are turned into a readable scale by :meth:`FeatureDensity.percentile`: the fraction of
the training responses that are closer to the training mean. Reference distances are
*cross-fitted* (each fold scored by a Gaussian fitted on the other folds): in-sample distances are
biased low in high dimension (a Gaussian fitted on n points in H dimensions puts its own points
closer than fresh points of the same distribution), and a percentile against them would put
in-distribution test points near 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from auq._checks import as_float_array, check_float, check_int

logger = logging.getLogger(__name__)

__all__ = ["FeatureDensity", "fit_density", "fit_feature_density", "mahalanobis_scores", "ledoit_wolf_shrinkage"]

_TENSOR_KEYS = ("density.mean", "density.precision", "density.reference")


@dataclass(frozen=True, eq=False)
class FeatureDensity:
    """A Gaussian fitted to training features, with the training responses' reference distances.

    Attributes
    ----------
    mean : numpy.ndarray, float64, shape [H]
    precision : numpy.ndarray, float64, shape [H, H]
        Inverse of the shrunk covariance.
    reference : numpy.ndarray, float64, shape [n], optional
        Sorted cross-fitted Mahalanobis distances of the training responses (see
        :func:`fit_density`); needed by :meth:`percentile`.
    normalize : bool, default False
        Features are scaled to unit L2 norm before the Gaussian (the direction of a pooled
        embedding, not its length). Measured with frozen MiniLM features (hh-rlhf train vs
        MT-Bench): per-pair AUROC 0.97 with it, 0.81 without.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> density = fit_density(rng.normal(size=(400, 3)))
    >>> p = density.percentile([[0.0, 0.0, 0.0], [6.0, 6.0, 6.0]])
    >>> bool(p[0] < 0.2), bool(0.99 < p[1] < 1.0)
    (True, True)
    """

    mean: np.ndarray
    precision: np.ndarray
    reference: np.ndarray | None = None
    normalize: bool = False

    def __post_init__(self) -> None:
        mean = as_float_array(self.mean, "mean", ndim=1)
        precision = as_float_array(self.precision, "precision", ndim=2)
        if precision.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"precision must have shape {(mean.shape[0], mean.shape[0])}, got {precision.shape}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "precision", precision)
        if self.reference is not None:
            ref = as_float_array(self.reference, "reference", ndim=1)
            if (ref < 0).any() or (np.diff(ref) < 0).any():
                raise ValueError("reference must hold sorted non-negative distances")
            object.__setattr__(self, "reference", ref)
        object.__setattr__(self, "normalize", bool(self.normalize))

    @property
    def n_features(self) -> int:
        """H, the feature width."""
        return int(self.mean.shape[0])

    def _check(self, features: Any) -> np.ndarray:
        x = as_float_array(features, "features", ndim=(1, 2))
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.shape[1] != self.n_features:
            raise ValueError(
                f"features must have {self.n_features} columns (the width the density was fitted on), "
                f"got {x.shape[1]}"
            )
        return _unit(x) if self.normalize else x

    def distance(self, features: Any) -> np.ndarray:
        """Mahalanobis distance ``sqrt((x - mean)^T P (x - mean))`` per row of ``features`` ``[n, H]``."""
        x = self._check(features)
        d = x - self.mean
        # (d P) ⊙ d summed over columns: one BLAS matmul (an einsum over both was 50x slower)
        return np.sqrt(np.maximum(((d @ self.precision) * d).sum(axis=1), 0.0))

    def score(self, features: Any) -> np.ndarray:
        """Same as :meth:`distance` (kept for compatibility)."""
        return self.distance(features)

    def percentile(self, features: Any) -> np.ndarray:
        """Readable OOD score in [0, 1): the fraction of training responses closer than each row.

        0.99 means "farther from the training features than 99% of the training responses".
        Linear interpolation between the sorted reference distances (``i / (n + 1)`` at the i-th),
        from 0 at distance 0, and a heavy tail beyond the largest one,
        ``1 - 1 / ((n + 1)(1 + (d - d_max) / s))`` with ``s`` the mean spacing of the top 5% of
        the reference; the map is strictly increasing in the distance, so rankings (and AUROC)
        are those of :meth:`distance`.
        """
        return self.percentile_of_distance(self.distance(features))

    def percentile_of_distance(self, distance: Any) -> np.ndarray:
        """:meth:`percentile` from Mahalanobis distances already computed."""
        if self.reference is None or self.reference.size == 0:
            raise ValueError("this density has no reference distances; refit it with fit_density")
        d = as_float_array(distance, "distance", ndim=1, allow_empty=True)
        ref = self.reference
        n = ref.size
        xs = np.unique(ref)
        counts = np.searchsorted(ref, xs, side="right")  # responses at or below each distinct value
        xp = np.concatenate([[0.0], xs]) if xs[0] > 0 else xs
        fp = np.concatenate([[0.0], counts / (n + 1.0)]) if xs[0] > 0 else counts / (n + 1.0)
        d_max = xs[-1]
        k = max(1, n // 20)
        s = (ref[-1] - ref[max(0, n - 1 - k)]) / k if n > 1 else 0.0
        s = max(s, 1e-3 * d_max, 1e-12)
        out = np.interp(d, xp, fp)
        far = d > d_max
        last = counts[-1] / (n + 1.0)  # n / (n + 1)
        out[far] = 1.0 - (1.0 - last) / (1.0 + (d[far] - d_max) / s)
        return np.minimum(out, np.nextafter(1.0, 0.0))

    # -- safetensors --------------------------------------------------------------------------
    def to_tensors(self) -> dict[str, torch.Tensor]:
        """float64 tensors for ``safetensors`` (keys ``density.mean``, ``density.precision``, ``density.reference``)."""
        out = {"density.mean": torch.from_numpy(self.mean.copy()), "density.precision": torch.from_numpy(self.precision.copy())}
        if self.reference is not None:
            out["density.reference"] = torch.from_numpy(self.reference.copy())
        out["density.normalize"] = torch.tensor([1.0 if self.normalize else 0.0], dtype=torch.float64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> FeatureDensity | None:
        """Inverse of :meth:`to_tensors`; ``None`` when ``tensors`` hold no density."""
        if "density.mean" not in tensors:
            return None
        ref = tensors.get("density.reference")
        return cls(
            mean=tensors["density.mean"].to(torch.float64).numpy(),
            precision=tensors["density.precision"].to(torch.float64).numpy(),
            reference=None if ref is None else ref.to(torch.float64).numpy(),
            normalize=bool(tensors["density.normalize"].item()) if "density.normalize" in tensors else False,
        )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ledoit_wolf_shrinkage(features: Any) -> float:
    """Ledoit-Wolf (2004) optimal shrinkage of the sample covariance towards a scaled identity.

    Equals ``sklearn.covariance.ledoit_wolf_shrinkage`` (with centring).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> 0.0 <= ledoit_wolf_shrinkage(rng.normal(size=(50, 20))) <= 1.0
    True
    """
    x = as_float_array(features, "features", ndim=2)
    n, h = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    mu = np.trace(s) / h
    delta = (np.sum(s * s) - 2 * mu * np.trace(s) + h * mu * mu) / h
    beta = (np.sum(np.sum(xc * xc, 1) ** 2) / n - np.sum(s * s)) / (n * h)
    if delta <= 0:
        return 1.0
    return float(min(beta, delta) / delta)


def _gaussian(x: np.ndarray, shrinkage: float | str) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    h = x.shape[1]
    cov = np.cov(x, rowvar=False, bias=False).reshape(h, h)
    alpha = ledoit_wolf_shrinkage(x) if shrinkage == "auto" else float(shrinkage)
    scale = max(float(np.trace(cov)) / h, 1e-12)
    cov = (1.0 - alpha) * cov + alpha * scale * np.eye(h)
    w, v = np.linalg.eigh(cov)
    w = np.where(w > w.max() * 1e-12, w, np.inf)  # pseudo-inverse of a singular (unshrunk) covariance
    precision = (v / w) @ v.T
    return mean, (precision + precision.T) / 2


def _check_shrinkage(shrinkage: Any) -> float | str:
    if isinstance(shrinkage, str):
        if shrinkage != "auto":
            raise ValueError(f"shrinkage must be a float in [0, 1] or 'auto', got {shrinkage!r}")
        return shrinkage
    return check_float(shrinkage, "shrinkage", minimum=0.0, maximum=1.0)


def fit_density(
    features: Any, *, shrinkage: float | str = "auto", n_folds: int = 10, seed: int = 0, groups: Any = None,
    normalize: bool = False, name: str = "features",
) -> FeatureDensity:
    """Fit a :class:`FeatureDensity` with cross-fitted reference distances.

    Parameters
    ----------
    features : array-like, shape [n, H]
        Pooled features of the training responses (chosen and rejected stacked). ``n >= H``.
    shrinkage : float in [0, 1] or "auto", default "auto"
        Weight of the scaled identity in the covariance; ``"auto"`` is the Ledoit-Wolf estimate
        (:func:`ledoit_wolf_shrinkage`; measured on hh-rlhf vs MT-Bench with MiniLM features it
        separates better than a fixed 0.1).
    n_folds : int, default 10
        Folds of the cross-fitted reference: each training response's reference distance comes
        from a Gaussian fitted on the other folds (in-sample distances are biased low).
    seed : int, default 0
        Seed of the fold assignment.
    groups : array-like of int, shape [n], optional
        Rows with the same group go to the same fold. Pass the pair index for the chosen and
        rejected response of a pair: they share a prompt, so splitting them across folds would
        make the held-out distances too small again.
    normalize : bool, default False
        Fit on (and score) unit-norm features; see :class:`FeatureDensity`.
    name : str
        Argument name used in error messages.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> density = fit_density(rng.normal(size=(300, 4)))
    >>> density.reference.shape, density.n_features
    ((300,), 4)
    """
    x = as_float_array(features, name, ndim=2)
    shrinkage = _check_shrinkage(shrinkage)
    n_folds = check_int(n_folds, "n_folds", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    n, h = x.shape
    if n < h or n < 2 * n_folds:
        need = max(h, 2 * n_folds)
        raise ValueError(
            f"{name} has {n} training responses for {h} feature dimensions; a feature density needs "
            f"at least {need} responses: fit it on more training pairs (each pair gives two)"
        )
    if groups is None:
        codes = np.arange(n)
    else:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups must have one value per row of {name} ({n}), got shape {g.shape}")
        codes = np.unique(g, return_inverse=True)[1]
    if codes.max() + 1 < n_folds:
        raise ValueError(f"groups has {codes.max() + 1} distinct values; need at least n_folds={n_folds}")
    x = _unit(x) if normalize else x
    mean, precision = _gaussian(x, shrinkage)
    folds = (np.random.default_rng(seed).permutation(codes.max() + 1) % n_folds)[codes]
    ref = np.empty(n)
    for f in range(n_folds):
        m, p = _gaussian(x[folds != f], shrinkage)
        d = x[folds == f] - m
        ref[folds == f] = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, p, d), 0.0))
    return FeatureDensity(mean=mean, precision=precision, reference=np.sort(ref), normalize=normalize)


def mahalanobis_scores(train_features: Any, features: Any, shrinkage: float = 0.1) -> np.ndarray:
    """Mahalanobis distance of ``features`` ``[n, H]`` to a Gaussian fitted on ``train_features``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(200, 3))
    >>> s = mahalanobis_scores(train, [[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    >>> bool(s[1] > s[0])
    True
    """
    shrinkage = check_float(shrinkage, "shrinkage", minimum=0.0, maximum=1.0)
    x = as_float_array(train_features, "train_features", ndim=2)
    if x.shape[0] < 2:
        raise ValueError(f"train_features needs at least 2 rows, got {x.shape[0]}")
    mean, precision = _gaussian(x, shrinkage)
    return FeatureDensity(mean=mean, precision=precision).distance(features)


def fit_feature_density(
    model: Any, dataset: Any, *, shrinkage: float | str = "auto", batch_size: int = 32,
    device: str | torch.device | None = None, progress: bool = True, normalize: bool = True,
) -> FeatureDensity:
    """Fit a :class:`FeatureDensity` on the pooled features of all responses of ``dataset``.

    To attach it to the model (saved with it, used by :func:`~auq.models.score`), call
    ``model.fit_uncertainty(dataset)`` instead.

    Examples
    --------
    >>> density = fit_feature_density(model, train)  # doctest: +SKIP
    >>> fc, fr = encode_dataset(model, test)  # doctest: +SKIP
    >>> ood = np.maximum(density.percentile(fc), density.percentile(fr))  # doctest: +SKIP
    """
    from ._scoring import encode_dataset

    shrinkage = _check_shrinkage(shrinkage)
    fc, fr = encode_dataset(model, dataset, batch_size=batch_size, device=device, progress=progress)
    return fit_density(np.concatenate([fc, fr]), shrinkage=shrinkage, groups=np.tile(np.arange(len(fc)), 2),
                       normalize=normalize)

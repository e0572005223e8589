"""Closed-form Bayesian last layer for Bradley-Terry preferences: MAP, Laplace posterior, evidence.

The model: pair ``i`` has a feature difference ``d_i = f(chosen_i) - f(rejected_i)`` and logit
``z_i = w·d_i`` (no bias: a per-response constant cancels in the difference), a soft target
``q_i`` in [0, 1] and a non-negative weight ``c_i``; the prior is ``w ~ N(0, α⁻¹ I)`` (or
``N(m₀, α⁻¹ I)`` with ``prior_mean``: the same fit of ``δ = w - m₀`` with logits offset by
``d_i·m₀``). The negative log joint is

    J(w) = -Σ c_i [q_i log σ(z_i) + (1 - q_i) log σ(-z_i)] + α/2 |w|²,

minimised by Newton's method with a backtracking line search (the problem is convex) until the
gradient norm is below a tolerance. The Laplace posterior is ``N(w*, H⁻¹)`` with the exact
Hessian ``H = Σ c_i σ(z_i)σ(-z_i) d_i d_iᵀ + α I`` (factored by Cholesky), and the Laplace
approximation of the log marginal likelihood (the evidence) is

    log Z(α) = -J(w*) + P/2 log α - 1/2 log det H.

``prior_precision="auto"`` maximises ``log Z`` over ``log α``: two of MacKay's fixed-point steps
``α ← (P - α tr H⁻¹) / |w*|²`` give a starting point (MacKay's fixed point itself ignores how the
curvature ``σσ'`` changes as ``w*`` moves with ``α``; on real features it lands ~10% off); the
exact derivative of ``log Z`` is then brought to zero by secant steps until the root is bracketed
and by Brent's method inside the bracket, refitting the MAP (warm-started) at each ``α``.

Why the closed form rather than a library (e.g. laplace-torch): for a linear head on cached,
frozen features the full-covariance Laplace posterior needs only one exact P x P Hessian, which
is cheap to form and factor; the closed form is exact (no Kronecker or diagonal approximation),
adds no dependency and runs in a second. It is written in float64 torch, so it runs on the
device the features are on; only the scalar root finding of ``log α`` uses SciPy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from auq._checks import as_float_tensor, check_float, check_int, check_labels
from auq._math import log_sigmoid_pair, probit_scaled_logit

logger = logging.getLogger(__name__)

__all__ = ["LaplacePosterior", "fit_laplace_posterior", "check_prior_precision", "unit_prior_precision"]

# search range of the evidence-chosen prior precision (log α)
_LOG_ALPHA_MIN, _LOG_ALPHA_MAX = math.log(1e-8), math.log(1e8)


PRIOR_RULES = ("unit", "auto")


def check_prior_precision(value: Any) -> float | str:
    """``"unit"``, ``"auto"`` or a finite positive float; anything else raises an error naming ``prior_precision``."""
    if isinstance(value, str):
        if value not in PRIOR_RULES:
            raise ValueError(f"prior_precision must be 'unit', 'auto' or a positive number, got {value!r}")
        return value
    return check_float(value, "prior_precision", minimum=0.0, inclusive=(False, True))


def unit_prior_precision(features_diff: Any) -> float:
    """The unit-margin prior precision ``α = mean_i |d_i|²`` of feature differences ``d_i``.

    Under the prior ``w ~ N(0, α⁻¹ I)`` the margin ``w·d`` of a training pair of average squared
    norm is then ``N(0, 1)``: a priori a typical preference lies within one logit of a coin flip
    (probabilities 0.27-0.73 at one standard deviation), a weakly informative prior on the scale
    of the data. It uses the features only, never the labels, so it stays the same as labels
    arrive and the posterior contracts as data grow (unlike the evidence-chosen ``"auto"``, which
    re-estimates the prior from the same labels).

    Examples
    --------
    >>> unit_prior_precision(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    13.0
    """
    d, _ = as_float_tensor(features_diff, "features", ndim=2)
    alpha = float((d.detach().to(torch.float64) ** 2).sum(-1).mean())
    if not alpha > 0:
        raise ValueError("features: every feature difference is zero; the unit prior needs a non-zero scale")
    return alpha


@dataclass(frozen=True, eq=False)
class LaplacePosterior:
    """The Gaussian Laplace posterior ``N(mean, covariance)`` of a Bradley-Terry linear head.

    Attributes
    ----------
    mean : torch.Tensor
        MAP weights ``w*`` ``[P]`` (float64).
    covariance : torch.Tensor
        ``H⁻¹`` ``[P, P]``.
    precision_cholesky : torch.Tensor
        Lower-triangular ``L`` with ``L Lᵀ = H`` (the posterior precision).
    prior_precision : float
        ``α`` (given, or chosen by the evidence).
    log_evidence : float
        Laplace-approximated log marginal likelihood at ``α``.
    nll : float
        ``Σ c_i ℓ_i(w*) / N``: the weighted negative log-likelihood per pair at the MAP.
    n_iter : int
        Newton iterations of the final MAP fit.
    converged : bool
        Whether the gradient norm fell below the tolerance.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> d = torch.randn(200, 3, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    >>> post = fit_laplace_posterior(d, prior_precision=1.0)
    >>> post.mean.shape, bool(post.predictive_variance(d).min() > 0)
    (torch.Size([3]), True)
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    precision_cholesky: torch.Tensor
    prior_precision: float
    log_evidence: float
    nll: float
    n_iter: int
    converged: bool

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def _x(self, x: Any, name: str) -> torch.Tensor:
        t, _ = as_float_tensor(x, name, ndim=(1, 2), like=self.mean)
        t = t.to(self.mean)
        if t.shape[-1] != self.dim:
            raise ValueError(f"{name} must have {self.dim} columns (the feature size), got shape {tuple(t.shape)}")
        return t

    def predictive_variance(self, x: Any) -> torch.Tensor:
        """``xᵀ H⁻¹ x`` per row: the epistemic variance of ``w·x`` (``|L⁻¹x|²``, never negative)."""
        t = self._x(x, "x")
        sol = torch.linalg.solve_triangular(self.precision_cholesky, t.reshape(-1, self.dim).T, upper=False)
        return (sol * sol).sum(0).reshape(t.shape[:-1])

    def predict(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``w*·x`` and variance ``xᵀH⁻¹x`` of the linear output for each row of ``x``."""
        t = self._x(x, "x")
        return t @ self.mean, self.predictive_variance(t)

    def preference_probability(self, d: Any) -> torch.Tensor:
        """``σ(m / sqrt(1 + πv/8))`` for feature differences ``d``: the probit-approximated predictive."""
        m, v = self.predict(d)
        return torch.sigmoid(probit_scaled_logit(m, v))

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` posterior draws ``[n, P]``: ``w* + L⁻ᵀ ε`` with ``ε ~ N(0, I)`` from a CPU generator seeded ``seed``."""
        n = check_int(n, "n", minimum=1)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
        eps = torch.randn(self.dim, n, generator=gen, dtype=torch.float64).to(self.mean.device)
        dev = torch.linalg.solve_triangular(self.precision_cholesky.T, eps, upper=True)
        return self.mean[None, :] + dev.T


# ---------------------------------------------------------------------------------------------
class _Problem:
    """Data of one fit (float64) and the pieces every α reuses."""

    def __init__(self, d: torch.Tensor, q: torch.Tensor, c: torch.Tensor, tol: float, max_iter: int,
                 offset: torch.Tensor | None = None):
        self.d, self.q, self.c = d, q, c
        self.offset = offset  # z_i = d_i·w + offset_i (a non-zero prior mean, see fit_laplace_posterior)
        self.n, self.p = d.shape
        self.max_iter = max_iter
        # absolute gradient tolerance, relative to the size the gradient's terms can reach
        self.gtol = tol * (1.0 + float((c * torch.linalg.vector_norm(d, dim=1)).sum()))
        self.eye = torch.eye(self.p, dtype=d.dtype, device=d.device)
        self.w = torch.zeros(self.p, dtype=d.dtype, device=d.device)  # warm start across α

    def logits(self, w: torch.Tensor) -> torch.Tensor:
        z = self.d @ w
        return z if self.offset is None else z + self.offset

    def nll_sum(self, w: torch.Tensor) -> torch.Tensor:
        lp, ln = log_sigmoid_pair(self.logits(w))
        return -(self.c * (self.q * lp + (1.0 - self.q) * ln)).sum()

    def objective(self, w: torch.Tensor, alpha: float) -> torch.Tensor:
        return self.nll_sum(w) + 0.5 * alpha * (w @ w)

    def hessian(self, w: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H, s)`` with ``s_i = c_i σ(z_i)σ(-z_i)``."""
        lp, ln = log_sigmoid_pair(self.logits(w))
        s = self.c * torch.exp(lp + ln)
        x = self.d * torch.sqrt(s)[:, None]
        return x.T @ x + alpha * self.eye, s

    def cholesky(self, h: torch.Tensor, alpha: float) -> torch.Tensor:
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) != 0 or not bool(torch.isfinite(chol).all()):
            scale = float(self.d.abs().max())
            raise ValueError(
                f"the posterior precision (Hessian) is not positive definite in float64 at "
                f"prior_precision={alpha:.6g} (Cholesky failed; largest |feature difference| = "
                f"{scale:.3g}): the features are too large or too collinear. Rescale or standardise "
                "the features, or pass a larger prior_precision"
            )
        return chol

    def fit_map(self, alpha: float) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        """Newton's method from the warm start; returns ``(w*, cholesky(H(w*)), iterations, converged)``."""
        w = self.w.clone()
        for it in range(self.max_iter + 1):
            lp, _ = log_sigmoid_pair(self.logits(w))
            grad = self.d.T @ (self.c * (torch.exp(lp) - self.q)) + alpha * w
            h, _ = self.hessian(w, alpha)
            chol = self.cholesky(h, alpha)
            if float(torch.linalg.vector_norm(grad)) <= self.gtol:
                self.w = w
                return w, chol, it, True
            if it == self.max_iter:
                break
            step = -torch.cholesky_solve(grad[:, None], chol)[:, 0]
            j0, slope, t = float(self.objective(w, alpha)), float(grad @ step), 1.0
            slack = 64 * torch.finfo(torch.float64).eps * abs(j0)  # decreases below J's rounding
            while True:  # backtracking (Armijo); a Newton step on a convex problem is a descent step
                w_new = w + t * step
                if float(self.objective(w_new, alpha)) <= j0 + 1e-4 * t * slope + slack or t < 1e-12:
                    break
                t *= 0.5
            w = w_new
        logger.warning(
            "Laplace MAP did not reach the gradient tolerance in %d Newton iterations "
            "(prior_precision=%.6g)", self.max_iter, alpha,
        )
        self.w = w
        return w, chol, self.max_iter, False

    def evidence(self, w: torch.Tensor, chol: torch.Tensor, alpha: float) -> float:
        logdet = 2.0 * float(torch.log(torch.diagonal(chol)).sum())
        return -float(self.objective(w, alpha)) + 0.5 * self.p * math.log(alpha) - 0.5 * logdet

    def d_evidence_d_log_alpha(self, log_alpha: float) -> float:
        """Exact ``d log Z / d log α`` (refits the MAP at ``α``)."""
        alpha = math.exp(log_alpha)
        w, chol, _, _ = self.fit_map(alpha)
        cov = torch.cholesky_inverse(chol)
        v = -(cov @ w)  # dw*/dα
        z = self.logits(w)
        lp, ln = log_sigmoid_pair(z)
        sig, sig_neg = torch.exp(lp), torch.exp(ln)
        ds = self.c * sig * sig_neg * (sig_neg - sig)  # d(c σ(z)σ(-z))/dz
        sol = torch.linalg.solve_triangular(chol, self.d.T, upper=False)
        h_i = (sol * sol).sum(0)  # d_iᵀ H⁻¹ d_i
        dlogdet = float(torch.trace(cov)) + float((ds * (self.d @ v) * h_i).sum())
        grad = -0.5 * float(w @ w) + 0.5 * self.p / alpha - 0.5 * dlogdet
        return alpha * grad

    def mackay_start(self, n_steps: int = 2) -> float:
        """A few of MacKay's fixed-point steps ``α ← (P - α tr H⁻¹) / |w*|²`` from ``α = 1``."""
        log_alpha = 0.0
        for _ in range(n_steps):
            alpha = math.exp(log_alpha)
            w, chol, _, _ = self.fit_map(alpha)
            gamma = self.p - alpha * float(torch.trace(torch.cholesky_inverse(chol)))
            norm2 = float(w @ w)
            if gamma <= 0 or norm2 <= 0:
                return _LOG_ALPHA_MAX
            log_alpha = min(max(math.log(gamma / norm2), _LOG_ALPHA_MIN), _LOG_ALPHA_MAX)
        return log_alpha

    def choose_log_alpha(self) -> float:
        """Maximise the Laplace evidence over ``log α``: a MacKay start, secant steps on the exact
        derivative until the root is bracketed, then Brent's method inside the bracket."""
        from scipy.optimize import brentq

        memo: dict[float, float] = {}

        def g(u: float) -> float:
            if u not in memo:
                memo[u] = self.d_evidence_d_log_alpha(u)
            return memo[u]

        u_prev = self.mackay_start()
        g_prev = g(u_prev)
        if g_prev == 0.0:
            return u_prev
        u = min(max(u_prev + math.copysign(0.2, g_prev), _LOG_ALPHA_MIN), _LOG_ALPHA_MAX)
        for _ in range(100):
            if u == u_prev:
                logger.warning(
                    "the evidence-chosen prior precision is at the search bound %.3g; the data "
                    "barely constrain (or perfectly separate) the head", math.exp(u),
                )
                return u
            gu = g(u)
            if gu == 0.0:
                return u
            if (gu > 0) != (g_prev > 0):
                a, b = sorted((u_prev, u))
                return float(brentq(g, a, b, xtol=1e-4, rtol=1e-8))
            slope = (gu - g_prev) / (u - u_prev)
            move = u - u_prev
            if slope < 0:  # extrapolate a little past the secant's root (to bracket it)
                target = u - 1.2 * gu / slope
                step = target - u
                step = math.copysign(min(max(abs(step), 0.05), 8 * abs(move)), step)
            else:  # no curvature information yet: keep going, twice as far
                step = 2.0 * move
            u_prev, g_prev, u = u, gu, min(max(u + step, _LOG_ALPHA_MIN), _LOG_ALPHA_MAX)
        raise RuntimeError("could not bracket the maximum of the evidence over the prior precision")


def _per_pair(values: Any, name: str, d: torch.Tensor) -> torch.Tensor:
    """A float64 per-pair vector like ``d``'s rows: ones when ``values`` is None, else checked."""
    n = d.shape[0]
    if values is None:
        return torch.ones(n, dtype=torch.float64, device=d.device)
    t, _ = as_float_tensor(values, name, ndim=1, like=d)
    t = t.detach().to(d)
    if t.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (one per pair), got {t.shape[0]}")
    return t


def fit_laplace_posterior(
    features_diff: Any,
    targets: Any = None,
    weights: Any = None,
    *,
    prior_precision: float | str = "auto",
    basis: Any = None,
    tol: float = 1e-10,
    max_iter: int = 100,
    prior_mean: Any = None,
) -> LaplacePosterior:
    """Laplace posterior of a Bradley-Terry linear head ``z = w·d`` on feature differences.

    Parameters
    ----------
    features_diff : array-like or torch.Tensor
        ``d_i = f(chosen_i) - f(rejected_i)``, ``[N, P]``; computed in float64 on its device.
    targets : array-like, optional
        Soft targets ``q_i`` in [0, 1] (probability that the first side is preferred); default 1.
    weights : array-like, optional
        Non-negative per-pair weights ``c_i`` (not all zero); default 1.
    prior_precision : float, "unit" or "auto", default "auto"
        ``α`` of the prior ``N(0, α⁻¹ I)``; ``"unit"``: :func:`unit_prior_precision` of the
        features (a typical pair's prior margin is ``N(0, 1)``); ``"auto"`` maximises the
        Laplace evidence.
    basis : array-like or torch.Tensor, optional
        ``V`` ``[P, k]`` with orthonormal columns: the likelihood is fitted on ``d V`` (``k``
        weights, ``α`` chosen by their evidence) and the posterior is lifted back to ``P``
        dimensions with the prior kept along the directions ``V`` leaves out:
        ``mean = V θ*``, ``covariance = V Σ_k Vᵀ + α⁻¹ (I - V Vᵀ)``. Default: all of ``R^P``.
    tol : float, default 1e-10
        Newton stops when ``|∇J| <= tol · (1 + Σ c_i |d_i|)``.
    max_iter : int, default 100
        Newton iterations per MAP fit (a warning is logged when they run out).
    prior_mean : array-like or torch.Tensor, optional
        ``m₀`` ``[P]``: the prior is ``N(m₀, α⁻¹ I)`` (default ``m₀ = 0``), e.g. the weights of a
        trained head that the posterior should stay centred on. Fitted as ``w = m₀ + δ`` with
        ``δ ~ N(0, α⁻¹ I)`` and logits ``d·m₀ + d·δ``, so the evidence and ``α`` are those of
        ``δ``; with ``basis``, ``δ = V θ`` and the posterior mean is ``m₀`` exactly along the
        directions ``V`` leaves out (``(I - V Vᵀ) mean = (I - V Vᵀ) m₀``).

    Returns
    -------
    LaplacePosterior

    Raises
    ------
    ValueError
        Non-finite or empty features, targets outside [0, 1], negative or all-zero weights, a
        length mismatch, a bad ``prior_precision``, or a Hessian that is not positive definite.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> d = torch.randn(300, 2, generator=g, dtype=torch.float64) + 0.5
    >>> post = fit_laplace_posterior(d)
    >>> post.prior_precision > 0 and post.converged
    True
    """
    prior_precision = check_prior_precision(prior_precision)
    tol = check_float(tol, "tol", minimum=0.0, inclusive=(False, True))
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    d, _ = as_float_tensor(features_diff, "features", ndim=2)
    d = d.detach().to(torch.float64)
    n = d.shape[0]
    q = _per_pair(targets, "targets", d)
    if targets is not None:
        check_labels(q, "targets")
    c = _per_pair(weights, "weights", d)
    if weights is not None:
        if bool((c < 0).any()):
            raise ValueError(f"weights must be non-negative, got a value of {float(c.min())!r}")
        if not float(c.sum()) > 0:
            raise ValueError("weights must not all be zero")
    v = None
    if basis is not None:
        v, _ = as_float_tensor(basis, "basis", ndim=2, like=d)
        v = v.detach().to(d)
        if v.shape[0] != d.shape[1] or not 1 <= v.shape[1] <= d.shape[1]:
            raise ValueError(
                f"basis must have shape [{d.shape[1]}, k] with 1 <= k <= {d.shape[1]} (the feature size), "
                f"got {tuple(v.shape)}"
            )
        gram = v.T @ v
        if not torch.allclose(gram, torch.eye(v.shape[1], dtype=gram.dtype, device=gram.device), atol=1e-6):
            raise ValueError("basis must have orthonormal columns (Vᵀ V = I)")
    m0 = None
    if prior_mean is not None:
        m0, _ = as_float_tensor(prior_mean, "prior_mean", ndim=1, like=d)
        m0 = m0.detach().to(d)
        if m0.shape[0] != d.shape[1]:
            raise ValueError(
                f"prior_mean must have {d.shape[1]} entries (the feature size), got {m0.shape[0]}"
            )
    prob = _Problem(d if v is None else d @ v, q, c, tol, max_iter, offset=None if m0 is None else d @ m0)
    if prior_precision == "auto":
        alpha = math.exp(prob.choose_log_alpha())
    elif prior_precision == "unit":
        alpha = unit_prior_precision(d)
    else:
        alpha = float(prior_precision)
    theta, chol, n_iter, converged = prob.fit_map(alpha)
    evidence = prob.evidence(theta, chol, alpha)
    if v is None:
        w, cov = theta, torch.cholesky_inverse(chol)
    else:  # lift: the data inform span(V); elsewhere the prior N(0, α⁻¹) stands
        w = v @ theta
        outside = torch.eye(d.shape[1], dtype=d.dtype, device=d.device) - v @ v.T
        cov = v @ torch.cholesky_inverse(chol) @ v.T + outside / alpha
        cov = 0.5 * (cov + cov.T)
        chol = prob.cholesky(v @ (chol @ chol.T) @ v.T + alpha * outside, alpha)
    if m0 is not None:  # the fit is of δ = w - m₀
        w = m0 + w
    post = LaplacePosterior(
        mean=w,
        covariance=cov,
        precision_cholesky=chol,
        prior_precision=alpha,
        log_evidence=evidence,
        nll=float(prob.nll_sum(theta)) / n,
        n_iter=n_iter,
        converged=converged,
    )
    logger.info(
        "Laplace posterior: prior_precision=%.6g, log_evidence=%.6g, nll=%.6g, %d Newton iterations",
        alpha, post.log_evidence, post.nll, n_iter,
    )
    return post

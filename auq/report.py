"""Evaluation report: metrics JSON, a self-contained HTML page, and the figures as PDF.

The report reads per-pair predictions (the output of :func:`auq.models.score` /
``auq score``): at least a column ``prob`` (P(chosen preferred)), optionally ``target`` (soft label,
1.0 when absent), the uncertainty columns ``total``, ``aleatoric``, ``epistemic``,
``margin_mean``, ``margin_std`` and the per-response reward statistics.

Calibration of pairwise predictions is measured order-free: confidence
``max(p, 1 - p)``, correct ``[p > 0.5]`` (ties half). The Brier decomposition is computed on the
*mirrored* pairs (each pair once as (p, q) and once as (1 - p, 1 - q), each with weight 1/2): with
every label equal to 1 the plain decomposition is degenerate (its uncertainty term is 0), while the
mirrored form measures how well p separates and matches the preferences, whatever the order the
data came in. The Brier score itself is the same either way.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import calibration as cal
from ._checks import (
    as_float_array,
    check_choice,
    check_columns,
    check_float,
    check_int,
    check_labels,
    check_probabilities,
)
from ._io import atomic_write_text
from ._report_html import _figure_of, _png_data_uri, _render_html
from .calibration._recalibrator import _logit_from_prob, mirror_pairs

logger = logging.getLogger(__name__)

RECALIBRATORS = ("temperature", "platt", "isotonic", "histogram", "beta")
UNCERTAINTY_COLUMNS = ("total", "aleatoric", "epistemic", "margin_std", "reward_std", "ood")
#: the documented abstention signal: answer the pairs whose preference is least uncertain
ABSTENTION_SIGNAL = "total"

__all__ = ["Report", "RECALIBRATORS", "compute_metrics", "write_report", "load_predictions"]


@dataclass(frozen=True)
class Report:
    """Where a report was written, and its metrics.

    Attributes
    ----------
    output_dir : Path
        The folder holding everything below.
    metrics : dict
        The metrics, as written to ``metrics.json``.
    metrics_path, html_path : Path
        ``metrics.json`` and ``report.html``.
    figures : dict of str to Path
        Figure name -> PDF path.
    """

    output_dir: Path
    metrics: dict[str, Any]
    metrics_path: Path
    html_path: Path
    figures: dict[str, Path] = field(default_factory=dict)


def load_predictions(source: str | os.PathLike | pd.DataFrame, *, require_target: bool = False) -> pd.DataFrame:
    """Read per-pair predictions from a CSV/Parquet file (or take a DataFrame) and validate them.

    Without a ``target`` column every target is 1.0 (the chosen response won), unless
    ``require_target`` (as ``auq report`` asks), which makes a missing column an error.

    Examples
    --------
    >>> df = load_predictions(pd.DataFrame({"prob": [0.9, 0.3]}))
    >>> list(df["target"])
    [1.0, 1.0]
    """
    if hasattr(source, "to_pandas") and hasattr(source, "rewards_chosen"):  # auq.models.Predictions
        df = source.to_pandas()
    elif isinstance(source, pd.DataFrame):
        df = source.copy()
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"predictions: no such file {str(path)!r}")
        if path.suffix not in (".parquet", ".csv", ".gz"):
            raise ValueError(f"predictions must be a .csv or .parquet file, got {path.name!r}")
        try:
            df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"predictions: {str(path)!r} is not a readable CSV file: {err}") from None
        except Exception as err:
            if type(err).__module__.startswith("pyarrow"):
                raise ValueError(f"predictions: {str(path)!r} is not a readable Parquet file: {err}") from None
            raise
    check_columns(df.columns, ["prob"], "predictions")
    if require_target and "target" not in df.columns:
        where = "" if isinstance(source, pd.DataFrame) else f" {os.fspath(source)!r}"
        raise ValueError(
            f"predictions{where} has no 'target' column (the label of each pair: 1.0 when the "
            "chosen response won, a vote share for soft labels); `auq score` writes it"
        )
    if len(df) == 0:
        raise ValueError("predictions is empty; at least one pair is needed")
    probs = as_float_array(df["prob"].to_numpy(), "predictions['prob']", ndim=1)
    check_probabilities(probs, "predictions['prob']")
    if "target" not in df.columns:
        df["target"] = 1.0
    targets = as_float_array(df["target"].to_numpy(), "predictions['target']", ndim=1)
    check_labels(targets, "predictions['target']")
    if "reward_std" not in df.columns and {"reward_std_chosen", "reward_std_rejected"} <= set(df.columns):
        # a pair is as unfamiliar as its less familiar response
        df["reward_std"] = np.maximum(df["reward_std_chosen"], df["reward_std_rejected"])
    for col in UNCERTAINTY_COLUMNS:
        if col in df.columns:
            as_float_array(df[col].to_numpy(), f"predictions[{col!r}]", ndim=1)
    return df


def _mirror(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pair in both orders, each with weight 1/2 (order-free binary view)."""
    return mirror_pairs(probs, targets, np.full(probs.shape[0], 0.5))


def _ci(metric, *arrays, n_resamples: int, seed: int, **kwargs) -> dict[str, Any]:
    if n_resamples > 0:
        ci = cal.bootstrap_ci(metric, *arrays, n_resamples=n_resamples, seed=seed, **kwargs)
        return {
            "estimate": float(ci.estimate),
            "low": float(ci.low),
            "high": float(ci.high),
            "method": ci.method,
            "contains_estimate": ci.contains_estimate,
        }
    return {"estimate": float(metric(*arrays, **kwargs))}


#: The rule of ``n_bins="auto"``, as written into ``metrics.json`` and the HTML report.
BIN_RULE = "n_bins = clip(round(sqrt(n_pairs) / 2), 2, 20) equal-mass bins of the confidence max(p, 1-p)"


def auto_bins(n_pairs: int) -> int:
    """Number of equal-mass confidence bins for ``n_pairs`` pairs: ``clip(round(√n / 2), 2, 20)``.

    About ``2√n`` pairs per bin, so that a bin's observed frequency has a standard error of about
    ``0.5 / √(2√n)`` (0.06 at 267 pairs, 0.04 at 1,734) while the bins still resolve the curve.

    Examples
    --------
    >>> auto_bins(267), auto_bins(1734), auto_bins(30)
    (8, 20, 3)
    """
    n_pairs = check_int(n_pairs, "n_pairs", minimum=1)
    return int(np.clip(round(np.sqrt(n_pairs) / 2), 2, 20))


def _resolve_bins(n_bins: int | str, n: int) -> tuple[int, str]:
    if isinstance(n_bins, str):
        check_choice(n_bins, "n_bins", ("auto",))
        return auto_bins(n), BIN_RULE
    b = check_int(n_bins, "n_bins", minimum=1)
    return b, f"n_bins = {b} (given) equal-mass bins of the confidence max(p, 1-p)"


def compute_metrics(
    probs: Any,
    targets: Any = None,
    uncertainties: dict[str, Any] | None = None,
    *,
    n_bins: int | str = "auto",
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """All report metrics for one set of pairwise predictions.

    Parameters
    ----------
    probs : array-like of shape (n_pairs,)
        P(chosen preferred) per pair.
    targets : array-like of shape (n_pairs,), optional
        Soft labels q = P(chosen preferred) (1.0 when absent).
    uncertainties : dict of str to array-like, optional
        Named per-pair uncertainty scores (e.g. ``total``, ``epistemic``) for selective prediction.
    n_bins : int or "auto", default "auto"
        Bins of the confidence ``max(p, 1 − p)`` in [0.5, 1]: the pairwise errors use this many
        equal-mass bins; ``"auto"`` chooses :func:`auto_bins` (``clip(round(√n / 2), 2, 20)``).
        Equal-width errors (``pairwise_l1_equal_width``), the mirrored ones and the Brier
        decomposition use ``2 · n_bins`` equal-width bins over [0, 1] (``n_bins`` over [0.5, 1]).
        The rule is written into ``metrics["binning"]``.
    n_resamples : int, default 1000
        Bootstrap resamples for the 95% intervals (0: no intervals).
    seed : int, default 0
        Seed of the bootstrap.

    Returns
    -------
    dict
        JSON-serialisable nested dict of floats.

    Examples
    --------
    >>> m = compute_metrics([0.9, 0.8, 0.3, 0.6], n_resamples=0)
    >>> m["accuracy"]
    0.75
    """
    probs = as_float_array(probs, "probs", ndim=1)
    check_probabilities(probs, "probs")
    n = probs.shape[0]
    if targets is None:
        targets = np.ones(n)
    targets = as_float_array(targets, "targets", ndim=1)
    check_labels(targets, "targets")
    if targets.shape != probs.shape:
        raise ValueError(f"probs and targets must have the same shape, got {probs.shape} and {targets.shape}")
    n_bins, rule = _resolve_bins(n_bins, n)
    n_resamples = check_int(n_resamples, "n_resamples", minimum=0)

    mp, mt, mw = _mirror(probs, targets)
    decomposition = cal.brier_decomposition(mp, mt, n_bins=2 * n_bins, weights=mw)
    metrics: dict[str, Any] = {
        "n_pairs": int(n),
        "n_bins": int(n_bins),
        "binning": {
            "n_bins": int(n_bins),
            "strategy": "equal-mass",
            "rule": rule,
            "pairs_per_bin": float(n / n_bins),
            "equal_width_bins_over_0_1": int(2 * n_bins),
        },
        "accuracy": float(cal.preference_accuracy(probs, targets)),
        "nll": float(cal.negative_log_likelihood(probs, targets)),
        "brier": float(cal.brier_score(probs, targets)),
        "brier_decomposition": {
            "reliability": float(decomposition.reliability),
            "resolution": float(decomposition.resolution),
            "uncertainty": float(decomposition.uncertainty),
            "binning_term": float(decomposition.binning_term),
            "within_bin_forecast_variance": float(decomposition.forecast_variance),
            "within_bin_forecast_outcome_covariance": float(decomposition.forecast_outcome_covariance),
            "note": (
                "order-free: computed on the mirrored pairs (p, q) and (1-p, 1-q) with "
                f"{2 * n_bins} equal-width bins; brier = reliability - resolution + uncertainty "
                "+ binning_term, where binning_term = within_bin_forecast_variance - 2 * "
                "within_bin_forecast_outcome_covariance is the Brier score of the raw forecasts "
                "minus that of the bin-averaged ones and can be negative"
            ),
        },
        "ece": {},
        "warnings": [],
    }
    ece = metrics["ece"]
    for norm in ("l1", "l2", "max"):
        ece[f"pairwise_{norm}"] = _ci(
            cal.pairwise_calibration_error, probs, targets, n_resamples=n_resamples, seed=seed,
            n_bins=n_bins, norm=norm, strategy="quantile",
        )
    ece["pairwise_l1_equal_width"] = _ci(
        cal.pairwise_calibration_error, probs, targets, n_resamples=n_resamples, seed=seed,
        n_bins=2 * n_bins,
    )
    ece["debiased_l2_mirrored"] = {
        "estimate": float(cal.debiased_calibration_error(mp, mt, n_bins=2 * n_bins))
    }
    ece["smooth_mirrored"] = {"estimate": float(cal.smooth_calibration_error(mp, mt))}

    correct = cal.pairwise_correctness(probs, targets)
    selective: dict[str, Any] = {}
    scores = dict(uncertainties or {})
    scores.setdefault("1 - confidence", 1.0 - np.maximum(probs, 1.0 - probs))
    for name, values in scores.items():
        u = as_float_array(values, f"uncertainties[{name!r}]", ndim=1)
        if u.shape != probs.shape:
            raise ValueError(
                f"uncertainties[{name!r}] must have shape {probs.shape}, got {u.shape}"
            )
        hard = correct != 0.5
        entry = {"aurc": float(cal.aurc(u, correct)), "eaurc": float(cal.eaurc(u, correct))}
        wrong = correct[hard] < 0.5
        if hard.any() and wrong.any() and (~wrong).any():
            entry["error_detection_auroc"] = float(
                cal.error_detection_auroc(u[hard], correct[hard] >= 0.5)
            )
        entry["mean"] = float(u.mean())
        entry["median"] = float(np.median(u))
        entry["p90"] = float(np.quantile(u, 0.9))
        selective[name] = entry
    metrics["uncertainty"] = selective
    return metrics


def _make_recalibrator(method: str):
    if method == "temperature":
        return cal.TemperatureScaling(), "logit"
    if method == "platt":
        return cal.PlattScaling(), "logit"
    if method == "isotonic":
        return cal.IsotonicCalibration(), "prob"
    if method == "histogram":
        return cal.HistogramBinning(), "prob"
    return cal.BetaCalibration(), "prob"


def recalibrate_split(
    probs: np.ndarray,
    targets: np.ndarray,
    method: str,
    *,
    test_size: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """Fit a recalibrator on one part of the pairs and apply it to the held-out rest.

    The recalibrator is fitted on the mirrored fit pairs (each pair once in each order), so that
    data where every label is "chosen wins" still show it both outcomes.

    Returns
    -------
    (held-out indices, held-out probs before, held-out probs after, fitted recalibrator)
    """
    method = check_choice(method, "recalibrate", RECALIBRATORS)
    test_size = check_float(test_size, "test_size", minimum=0.0, maximum=1.0, inclusive=(False, False))
    n = probs.shape[0]
    n_test = int(round(n * test_size))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"recalibration needs at least 2 fit pairs and 1 held-out pair, got {n} pairs")
    order = np.random.default_rng(seed).permutation(n)
    test_idx, fit_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    recal, space = _make_recalibrator(method)
    fp, ft, _ = _mirror(probs[fit_idx], targets[fit_idx])
    scores_fit = _logit_from_prob(fp) if space == "logit" else fp
    if "symmetrize" in recal.get_params():
        recal.set_params(symmetrize=False)  # already mirrored
    recal.fit(scores_fit, ft)
    test_scores = _logit_from_prob(probs[test_idx]) if space == "logit" else probs[test_idx]
    after = np.clip(np.asarray(recal.predict_proba(test_scores), dtype=np.float64), 0.0, 1.0)
    return test_idx, probs[test_idx], after, recal


def write_report(
    predictions: str | os.PathLike | pd.DataFrame,
    output_dir: str | os.PathLike,
    *,
    recalibrate: str | None = None,
    test_size: float = 0.5,
    n_bins: int | str = "auto",
    n_resamples: int = 1000,
    seed: int = 0,
    title: str = "auq evaluation report",
    ood_predictions: Any = None,
) -> Report:
    """Write ``metrics.json``, ``report.html`` (figures embedded) and ``figures/*.pdf``.

    Parameters
    ----------
    predictions : path, DataFrame or Predictions
        Per-pair predictions (``auq score`` output); see :func:`load_predictions`.
    output_dir : path
        Folder to write into (created; files are replaced atomically).
    recalibrate : {"temperature", "platt", "isotonic", "histogram", "beta"}, optional
        Also fit this recalibrator on a random ``1 - test_size`` of the pairs and compare the
        held-out pairs before and after.
    test_size : float, default 0.5
        Held-out fraction for the recalibration comparison.
    n_bins, n_resamples, seed
        Binning (see :func:`compute_metrics`; ``"auto"``: :func:`auto_bins` of the pairs evaluated),
        bootstrap resamples for the 95% intervals, and the seed for splits and bootstrap.
    title : str
        Title of the HTML page.
    ood_predictions : path, DataFrame or Predictions, optional
        The same model's predictions on a shifted set (e.g. another domain). The report's
        out-of-distribution section then shows the ``ood`` density percentile of both sets and
        the AUROC of every uncertainty score for telling them apart; without it, the in-domain
        ``ood`` distribution alone (when the model has a density).

    Returns
    -------
    Report

    Examples
    --------
    >>> import tempfile
    >>> df = pd.DataFrame({"prob": np.linspace(0.05, 0.95, 40)})
    >>> rep = write_report(df, tempfile.mkdtemp(), n_resamples=0)
    >>> sorted(rep.figures)[:1]
    ['reliability']
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import plots

    df = load_predictions(predictions)
    if recalibrate is not None:
        check_choice(recalibrate, "recalibrate", RECALIBRATORS)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output_dir {str(out)!r} is an existing file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)

    probs = df["prob"].to_numpy(dtype=np.float64)
    targets = df["target"].to_numpy(dtype=np.float64)
    uncertainties = {c: df[c].to_numpy(dtype=np.float64) for c in UNCERTAINTY_COLUMNS if c in df}
    metrics = compute_metrics(
        probs, targets, uncertainties, n_bins=n_bins, n_resamples=n_resamples, seed=seed
    )

    figures: dict[str, Path] = {}
    images: dict[str, str] = {}

    def keep(name: str, fig) -> None:
        if fig is None:
            return
        paths = plots.save_figure(fig, fig_dir / name, formats=("pdf",))
        figures[name] = Path(paths[0]) if isinstance(paths, (list, tuple)) else Path(paths)
        images[name] = _png_data_uri(fig)
        plt.close(fig)

    recal_rows = None
    if recalibrate is not None:
        test_idx, before, after, recal = recalibrate_split(
            probs, targets, recalibrate, test_size=test_size, seed=seed
        )
        t = targets[test_idx]
        m_before = compute_metrics(before, t, n_bins=n_bins, n_resamples=n_resamples, seed=seed)
        m_after = compute_metrics(after, t, n_bins=n_bins, n_resamples=n_resamples, seed=seed)
        keys = [("accuracy", "accuracy"), ("nll", "nll"), ("brier", "brier")]
        summary = {
            "method": recalibrate,
            "n_fit": int(len(probs) - len(test_idx)),
            "n_heldout": int(len(test_idx)),
            "before": {k: m_before[k] for k, _ in keys} | {"ece": m_before["ece"]["pairwise_l1"]},
            "after": {k: m_after[k] for k, _ in keys} | {"ece": m_after["ece"]["pairwise_l1"]},
        }
        summary["warnings"] = _recalibration_warnings(summary)
        metrics["warnings"].extend(summary["warnings"])
        if hasattr(recal, "temperature_"):
            summary["temperature"] = float(recal.temperature_)
        metrics["recalibration"] = summary
        recal_rows = pd.DataFrame(
            {
                "before": [summary["before"][k] for k in ("accuracy", "nll", "brier", "ece")],
                "after": [summary["after"][k] for k in ("accuracy", "nll", "brier", "ece")],
            },
            index=pd.Index(["accuracy", "NLL", "Brier", "pairwise ECE"], name="held-out"),
        )
        fig = plots.reliability_diagram(
            {"before": before, f"after {recalibrate}": after},
            {"before": t, f"after {recalibrate}": t},
            n_bins=m_before["n_bins"], strategy="quantile", pairwise=True,
        )
    else:
        fig = plots.reliability_diagram(
            {"model": probs}, {"model": targets}, n_bins=metrics["n_bins"], strategy="quantile", pairwise=True
        )
    keep("reliability", _figure_of(fig))

    correct = cal.pairwise_correctness(probs, targets)
    if uncertainties:
        # the documented abstention signal first (and named so), then the others
        order = sorted(uncertainties, key=lambda n: n != ABSTENTION_SIGNAL)
        curves = {
            (f"{n} (abstention signal)" if n == ABSTENTION_SIGNAL else n): cal.risk_coverage_curve(uncertainties[n], correct)
            for n in order
        }
        keep("risk_coverage", _figure_of(plots.risk_coverage_plot(curves)))
    shifted = None if ood_predictions is None else load_predictions(ood_predictions)
    if "ood" in df.columns or shifted is not None:
        metrics["ood"], scores = _ood_section(df, shifted)
        auroc = metrics["ood"]["auroc"].get("ood")
        keep("ood", _figure_of(plots.ood_histogram(scores, auroc=auroc)) if scores else None)
    if {"aleatoric", "epistemic"} <= set(df.columns):
        # the plot reads the two columns it draws; nothing missing is filled in
        keep("decomposition", _figure_of(plots.uncertainty_decomposition_plot(df[["aleatoric", "epistemic"]])))

    metrics_path = out / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=False))
    html_path = out / "report.html"
    atomic_write_text(html_path, _render_html(title, metrics, images, recal_rows))
    return Report(out, metrics, metrics_path, html_path, figures)


def _ood_section(df: pd.DataFrame, shifted: pd.DataFrame | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Out-of-distribution metrics (AUROC of each uncertainty score, in = ``df``, out =
    ``shifted``) and the ``ood`` scores to draw."""
    section: dict[str, Any] = {"n_in": int(len(df)), "n_out": 0 if shifted is None else int(len(shifted)), "auroc": {}}
    scores: dict[str, np.ndarray] = {}
    if "ood" in df.columns:
        scores["evaluated pairs"] = df["ood"].to_numpy(np.float64)
        section["ood_in_median"] = float(np.median(scores["evaluated pairs"]))
        section["ood_in_above_0.99"] = float(np.mean(scores["evaluated pairs"] > 0.99))
    if shifted is not None:
        for col in UNCERTAINTY_COLUMNS:
            if col in df.columns and col in shifted.columns:
                section["auroc"][col] = cal.ood_auroc(df[col].to_numpy(np.float64), shifted[col].to_numpy(np.float64))
        if "ood" in shifted.columns:
            scores["shifted pairs"] = shifted["ood"].to_numpy(np.float64)
            section["ood_out_median"] = float(np.median(scores["shifted pairs"]))
            section["ood_out_above_0.99"] = float(np.mean(scores["shifted pairs"] > 0.99))
    section["note"] = (
        "ood: the pair's larger training-density percentile of its two responses (0.99 = farther from "
        "the training features than 99% of the training responses). An in-domain response's "
        "percentile is about uniform on [0, 1]; a pair takes the larger of two, so in-domain pairs "
        "sit higher (median about 0.6). AUROC: shifted pairs = positives."
    )
    return section, scores


def _recalibration_warnings(summary: dict[str, Any]) -> list[str]:
    """Warnings when the recalibrator made held-out ECE or NLL worse."""
    out = []
    before, after = summary["before"], summary["after"]
    for name, b, a in (
        ("pairwise ECE", before["ece"]["estimate"], after["ece"]["estimate"]),
        ("NLL", before["nll"], after["nll"]),
    ):
        if a > b:
            out.append(
                f"{summary['method']} recalibration worsened the held-out {name} "
                f"({b:.4f} -> {a:.4f} on {summary['n_heldout']} pairs); do not apply it"
            )
    return out

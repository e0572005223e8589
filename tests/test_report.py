"""auq.report: metrics JSON, self-contained HTML and PDF figures from per-pair predictions."""

import json
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from auq import calibration as cal
from auq.estimators import decompose
from auq.report import compute_metrics, load_predictions, write_report


@pytest.fixture(scope="module")
def predictions() -> pd.DataFrame:
    """An over-confident 5-member ensemble: labels follow σ(true margin), the members say 2x more."""
    rng = np.random.default_rng(0)
    n, k = 500, 5
    true = rng.normal(scale=1.5, size=n)
    members = 2.0 * true[:, None] + rng.normal(scale=0.6, size=(n, k))
    df = decompose(members).to_pandas()
    df["target"] = (rng.random(n) < 1.0 / (1.0 + np.exp(-true))).astype(float)
    return df


def test_metrics_equal_the_calibration_functions(predictions):
    p, q = predictions["prob"].to_numpy(), predictions["target"].to_numpy()
    m = compute_metrics(p, q, {"epistemic": predictions["epistemic"]}, n_resamples=0)
    assert m["n_pairs"] == 500
    assert m["accuracy"] == pytest.approx(cal.preference_accuracy(p, q), abs=1e-12)
    assert m["nll"] == pytest.approx(cal.negative_log_likelihood(p, q), abs=1e-12)
    assert m["brier"] == pytest.approx(cal.brier_score(p, q), abs=1e-12)
    assert m["ece"]["pairwise_l1"]["estimate"] == pytest.approx(
        cal.pairwise_calibration_error(p, q, n_bins=20), abs=1e-12
    )
    correct = np.where(p > 0.5, q, 1 - q)
    assert m["uncertainty"]["epistemic"]["aurc"] == pytest.approx(
        cal.aurc(predictions["epistemic"].to_numpy(), correct), abs=1e-12
    )
    # mirrored Brier decomposition adds up to the Brier score (Brier is order-free)
    bd = m["brier_decomposition"]
    total = bd["reliability"] - bd["resolution"] + bd["uncertainty"] + bd["within_bin_variance"]
    assert total == pytest.approx(m["brier"], abs=1e-12)
    assert bd["uncertainty"] > 0.2  # not the degenerate all-ones value 0


def test_bootstrap_intervals_bracket_the_estimate(predictions):
    m = compute_metrics(predictions["prob"], predictions["target"], n_resamples=200, seed=1)
    for entry in ("pairwise_l1", "pairwise_l2", "pairwise_l1_quantile"):
        e = m["ece"][entry]
        assert e["low"] <= e["estimate"] <= e["high"]
        assert e["high"] > e["low"]


def test_write_report_with_temperature(tmp_path, predictions):
    rep = write_report(predictions, tmp_path, recalibrate="temperature", n_resamples=100)
    saved = json.loads(rep.metrics_path.read_text())
    assert saved["accuracy"] == pytest.approx(rep.metrics["accuracy"])
    rc = saved["recalibration"]
    # the ensemble is over-confident by 2x: the temperature says so and NLL drops on held-out pairs
    assert 1.4 < rc["temperature"] < 3.0
    assert rc["after"]["nll"] < rc["before"]["nll"]
    assert rc["n_fit"] + rc["n_heldout"] == 500
    html = rep.html_path.read_text()
    assert html.count("data:image/png;base64,") == 3 == len(rep.figures)
    assert "Recalibration" in html and "temperature" in html
    assert re.search(r"<td>preference accuracy</td><td>0\.\d{4}", html)
    for path in rep.figures.values():
        assert path.suffix == ".pdf" and path.read_bytes().startswith(b"%PDF")
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("method", ["platt", "isotonic", "histogram", "beta"])
def test_other_recalibrators(tmp_path, predictions, method):
    rep = write_report(predictions, tmp_path, recalibrate=method, n_resamples=0)
    rc = rep.metrics["recalibration"]
    assert rc["method"] == method
    assert rc["after"]["nll"] < rc["before"]["nll"]


def test_reads_csv_and_defaults_targets(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"prob": [0.9, 0.2, 0.7, 0.6]}).to_csv(path, index=False)
    df = load_predictions(path)
    assert df["target"].tolist() == [1.0] * 4
    rep = write_report(path, tmp_path / "out", n_resamples=0)
    assert rep.metrics["accuracy"] == 0.75
    assert set(rep.figures) == {"reliability"}


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="missing required column"):
        load_predictions(pd.DataFrame({"p": [0.5]}))
    with pytest.raises(ValueError, match=r"predictions\['prob'\]"):
        load_predictions(pd.DataFrame({"prob": [0.5, 1.5]}))
    with pytest.raises(ValueError, match=r"predictions\['prob'\] contains 1 NaN"):
        load_predictions(pd.DataFrame({"prob": [0.5, np.nan]}))
    with pytest.raises(ValueError, match="empty"):
        load_predictions(pd.DataFrame({"prob": []}))
    with pytest.raises(ValueError, match="no such file"):
        load_predictions(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="recalibrate must be one of"):
        write_report(pd.DataFrame({"prob": [0.6, 0.7, 0.4]}), tmp_path, recalibrate="magic")

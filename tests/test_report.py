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
        cal.pairwise_calibration_error(p, q, n_bins=11, strategy="quantile"), abs=1e-12
    )  # 500 pairs: round(sqrt(500) / 2) = 11 equal-mass bins
    assert m["n_bins"] == m["binning"]["n_bins"] == 11 and m["binning"]["strategy"] == "equal-mass"
    assert m["ece"]["pairwise_l1_equal_width"]["estimate"] == pytest.approx(
        cal.pairwise_calibration_error(p, q, n_bins=22), abs=1e-12
    )
    correct = np.where(p > 0.5, q, 1 - q)
    assert m["uncertainty"]["epistemic"]["aurc"] == pytest.approx(
        cal.aurc(predictions["epistemic"].to_numpy(), correct), abs=1e-12
    )
    # mirrored Brier decomposition adds up to the Brier score (Brier is order-free)
    bd = m["brier_decomposition"]
    total = bd["reliability"] - bd["resolution"] + bd["uncertainty"] + bd["binning_term"]
    assert total == pytest.approx(m["brier"], abs=1e-12)
    assert bd["binning_term"] == pytest.approx(
        bd["within_bin_forecast_variance"] - 2 * bd["within_bin_forecast_outcome_covariance"], abs=1e-15
    )
    assert "within_bin_variance" not in bd
    assert bd["uncertainty"] > 0.2  # not the degenerate all-ones value 0


def test_bootstrap_intervals_bracket_the_estimate(predictions):
    m = compute_metrics(predictions["prob"], predictions["target"], n_resamples=200, seed=1)
    for entry in ("pairwise_l1", "pairwise_l2", "pairwise_l1_equal_width"):
        e = m["ece"][entry]
        assert e["method"] == "bca" and e["contains_estimate"]  # the default method
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


@pytest.mark.parametrize("n, bins", [(30, 3), (100, 5), (267, 8), (500, 11), (1734, 20), (10_000, 20)])
def test_bins_follow_the_sample_size_and_the_rule_is_stated(tmp_path, n, bins):
    from auq.report import BIN_RULE, auto_bins

    assert auto_bins(n) == bins == int(np.clip(round(np.sqrt(n) / 2), 2, 20))
    rng = np.random.default_rng(n)
    p = rng.uniform(0.05, 0.95, size=n)
    rep = write_report(pd.DataFrame({"prob": p, "target": (rng.random(n) < p) * 1.0}), tmp_path, n_resamples=0)
    saved = json.loads(rep.metrics_path.read_text())
    assert saved["binning"] == {
        "n_bins": bins, "strategy": "equal-mass", "rule": BIN_RULE, "pairs_per_bin": n / bins,
        "equal_width_bins_over_0_1": 2 * bins,
    }  # fmt: skip
    # equal mass: every bin of max(p, 1-p) holds n / bins pairs (up to one)
    conf = np.maximum(p, 1 - p)
    edges = np.percentile(conf, np.linspace(0, 100, bins + 1))
    counts = np.histogram(conf, edges)[0]
    assert counts.max() - counts.min() <= 1
    assert BIN_RULE in rep.html_path.read_text().replace("&#x27;", "'")
    given = compute_metrics(p, n_bins=4, n_resamples=0)
    assert given["n_bins"] == 4 and "4 (given)" in given["binning"]["rule"]


def test_recalibration_that_worsens_heldout_calibration_is_flagged(tmp_path):
    """Calibrated pairs: any recalibrator fitted on half of them can only add noise on the other half.

    Histogram binning with its default bins, fitted on 40 pairs, worsens the held-out NLL."""
    rng = np.random.default_rng(0)
    n = 80
    m = rng.normal(scale=1.5, size=n)
    p = 1 / (1 + np.exp(-m))
    q = (rng.random(n) < p) * 1.0
    rep = write_report(pd.DataFrame({"prob": p, "target": q}), tmp_path, recalibrate="histogram", n_resamples=0)
    rc = rep.metrics["recalibration"]
    worse = [k for k in ("nll",) if rc["after"][k] > rc["before"][k]]
    worse += ["ece"] if rc["after"]["ece"]["estimate"] > rc["before"]["ece"]["estimate"] else []
    assert worse  # the case this test is about
    assert len(rc["warnings"]) == len(worse) and rep.metrics["warnings"] == rc["warnings"]
    assert all("worsened the held-out" in w and "histogram" in w for w in rc["warnings"])
    saved = json.loads(rep.metrics_path.read_text())
    assert saved["warnings"] == rc["warnings"]
    html = rep.html_path.read_text()
    assert html.count("<p class='warning'>Warning: histogram recalibration worsened") == 2 * len(worse)


def test_improving_recalibration_is_not_flagged(tmp_path, predictions):
    rep = write_report(predictions, tmp_path, recalibrate="temperature", n_resamples=0)
    assert rep.metrics["recalibration"]["warnings"] == [] == rep.metrics["warnings"]
    assert "class='warning'" not in rep.html_path.read_text()


def test_brier_terms_named_honestly_and_the_binning_term_can_be_negative(tmp_path):
    """Within each bin the higher forecasts win more often: the covariance term is positive and
    the binning term (the old ``within_bin_variance``) is negative."""
    p = np.array([0.55, 0.59, 0.65, 0.69, 0.75, 0.79, 0.85, 0.89])  # 2 pairs in each of 4 bins
    q = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    d = cal.brier_decomposition(*(np.concatenate([a, 1 - a]) for a in (p, q)), n_bins=10)
    assert d.binning_term < 0 and d.within_bin_variance == d.binning_term
    # by hand: each bin holds {c - 0.02 (lost), c + 0.02 (won)} and its mirror
    assert d.forecast_variance == pytest.approx(0.02**2, abs=1e-12)
    assert d.forecast_outcome_covariance == pytest.approx(0.02 * 0.5, abs=1e-12)
    assert d.binning_term == pytest.approx(0.02**2 - 2 * 0.01, abs=1e-12)
    rep = write_report(pd.DataFrame({"prob": p, "target": q}), tmp_path, n_bins=5, n_resamples=0)
    bd = rep.metrics["brier_decomposition"]
    assert bd["binning_term"] == pytest.approx(d.binning_term, abs=1e-12)
    html = rep.html_path.read_text()
    assert "<td>binning_term</td>" in html and "within_bin_variance" not in html
    assert "can be negative" in html


def test_report_from_a_minimal_predictions_table(tmp_path):
    """A predictions table with only prob, target, aleatoric and epistemic: the report is written
    and the decomposition figure drawn from those two columns."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 60)
    df = pd.DataFrame({"prob": p, "target": (rng.random(60) < p).astype(float),
                       "aleatoric": rng.uniform(0.3, 0.69, 60), "epistemic": rng.uniform(0, 0.02, 60)})
    rep = write_report(df, tmp_path, n_resamples=0)
    assert "decomposition" in rep.figures and rep.figures["decomposition"].stat().st_size > 0
    assert rep.metrics["n_pairs"] == 60 and {"aleatoric", "epistemic"} <= set(rep.metrics["uncertainty"])

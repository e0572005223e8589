"""Tests of auq.plots: draw each figure and check what is drawn, not merely that a file exists."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from auq.estimators import decompose  # noqa: E402
from auq.plots import (  # noqa: E402
    PALETTE,
    PAPER_RC,
    ece_from_table,
    member_reward_plot,
    overoptimization_plot,
    paper_style,
    reliability_diagram,
    risk_coverage_plot,
    save_figure,
    uncertainty_decomposition_plot,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------------------------
# helpers


@dataclass(frozen=True)
class Table:
    """Stand-in with the field names of auq.calibration.ReliabilityTable."""

    bin_lower: np.ndarray
    bin_upper: np.ndarray
    count: np.ndarray
    weight: np.ndarray
    mean_confidence: np.ndarray
    observed_frequency: np.ndarray
    gap: np.ndarray


@dataclass(frozen=True)
class Curve:
    """Stand-in with the field names of auq.calibration.RiskCoverage."""

    coverage: np.ndarray
    risk: np.ndarray
    threshold: np.ndarray
    aurc: float


def _table(freq, conf, count, edges=None):
    freq, conf, count = (np.asarray(a, dtype=float) for a in (freq, conf, count))
    n = len(freq)
    edges = np.linspace(0, 1, n + 1) if edges is None else np.asarray(edges, dtype=float)
    return Table(edges[:-1], edges[1:], count, count, conf, freq, conf - freq)


def _bars(ax, gid):
    return [p for p in ax.patches if p.get_gid() == gid]


def _legend_texts(ax):
    leg = ax.get_legend()
    assert leg is not None
    return [t.get_text() for t in leg.get_texts()]


@pytest.fixture
def table():
    # 5 bins, the second one empty (NaN statistics), overconfident model
    return _table(
        freq=[0.05, np.nan, 0.40, 0.55, 0.80],
        conf=[0.1, np.nan, 0.5, 0.7, 0.93],
        count=[40, 0, 25, 30, 105],
    )


# --------------------------------------------------------------------------------------------
# reliability diagram


def test_reliability_bars_equal_table(table):
    fig = reliability_diagram(table)
    assert isinstance(fig, plt.Figure)
    ax, ax_count = fig.axes
    keep = table.count > 0
    bars = _bars(ax, "bars:0")
    assert len(bars) == keep.sum() == 4
    np.testing.assert_allclose([b.get_height() for b in bars], table.observed_frequency[keep])
    np.testing.assert_allclose([b.get_x() for b in bars], table.bin_lower[keep])
    np.testing.assert_allclose(
        [b.get_width() for b in bars], (table.bin_upper - table.bin_lower)[keep]
    )
    counts = _bars(ax_count, "counts:0")
    np.testing.assert_allclose([b.get_height() for b in counts], table.count[keep])
    np.testing.assert_allclose([b.get_x() for b in counts], table.bin_lower[keep])
    # gap: from the observed frequency up to the mean confidence
    gaps = _bars(ax, "gap:0")
    np.testing.assert_allclose([g.get_y() for g in gaps], table.observed_frequency[keep])
    np.testing.assert_allclose(
        [g.get_y() + g.get_height() for g in gaps], table.mean_confidence[keep]
    )
    # ECE by hand: sum_b n_b |freq_b - conf_b| / n
    ece = (40 * 0.05 + 25 * 0.10 + 30 * 0.15 + 105 * 0.13) / 200
    assert ece_from_table(table) == pytest.approx(ece)
    assert any(f"ECE {ece:.3f}" in t for t in _legend_texts(ax))
    # the diagonal and axis labels
    (diag,) = [line for line in ax.lines if line.get_gid() == "diagonal"]
    np.testing.assert_allclose(diag.get_xdata(), [0, 1])
    np.testing.assert_allclose(diag.get_ydata(), [0, 1])
    assert ax.get_ylabel() == "observed frequency"
    assert ax_count.get_xlabel() == "predicted probability"
    assert ax_count.get_ylabel() == "count"
    assert ax.get_xlim() == pytest.approx((0, 1))


def test_reliability_line_kind_and_several_models(table):
    other = _table(freq=[0.1, 0.3, 0.5, 0.7, 0.9], conf=[0.1, 0.3, 0.5, 0.7, 0.9],
                   count=[10, 10, 10, 10, 10])
    fig = reliability_diagram({"before": table, "after": other})
    ax = fig.axes[0]
    model_lines = [line for line in ax.lines if (line.get_gid() or "").startswith("line:")]
    assert len(model_lines) == 2
    keep = table.count > 0
    np.testing.assert_allclose(model_lines[0].get_xdata(), table.mean_confidence[keep])
    np.testing.assert_allclose(model_lines[0].get_ydata(), table.observed_frequency[keep])
    assert model_lines[0].get_color() != model_lines[1].get_color()
    texts = _legend_texts(ax)
    assert any(t.startswith("before: ECE") for t in texts)
    assert any(t == "after: ECE 0.000" for t in texts)
    # counts of both models beneath
    assert len(_bars(fig.axes[1], "counts:0")) == 4
    assert len(_bars(fig.axes[1], "counts:1")) == 5


def test_reliability_list_of_tables_names_and_bar_kind(table):
    fig = reliability_diagram([table, table], names=["a", "b"], kind="bar", show_gap=False)
    ax = fig.axes[0]
    assert len(_bars(ax, "bars:0")) == len(_bars(ax, "bars:1")) == 4
    assert not _bars(ax, "gap:0")
    assert sum(t.startswith(("a:", "b:")) for t in _legend_texts(ax)) == 2
    with pytest.raises(ValueError, match="names"):
        reliability_diagram([table, table], names=["only one"])


def test_reliability_ax_passthrough(table):
    fig, ax = plt.subplots()
    assert reliability_diagram(table, show_counts=False, ax=ax) is ax
    fig2, ax2 = plt.subplots()
    out = reliability_diagram(table, ax=ax2)
    assert out is fig2 and len(fig2.axes) == 2 and fig2.axes[0] is ax2
    assert len(_bars(fig2.axes[1], "counts:0")) == 4


def test_reliability_pairwise_axes_labels():
    t = _table(freq=[0.55, 0.7, 0.85], conf=[0.58, 0.75, 0.92], count=[5, 5, 5],
               edges=[0.5, 2 / 3, 5 / 6, 1.0])
    ax = reliability_diagram(t, show_counts=False)
    assert ax.get_xlim() == pytest.approx((0.5, 1.0))
    assert ax.get_ylabel() == "accuracy"
    assert ax.get_xlabel().startswith("confidence")


def test_reliability_validation(table):
    with pytest.raises(ValueError, match="labels"):
        reliability_diagram(np.array([0.1, 0.2]), np.array([1.0]))
    with pytest.raises(ValueError, match="probs_or_tables"):
        reliability_diagram(np.array([0.1, np.nan]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="probs_or_tables"):
        reliability_diagram(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="probs_or_tables"):
        reliability_diagram(np.array([0.1, 1.2]), np.array([1.0, 0.0]))
    with pytest.raises(TypeError, match="labels"):
        reliability_diagram(np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="probs_or_tables"):
        reliability_diagram({})
    with pytest.raises(ValueError, match="ece_ci"):
        reliability_diagram(table, ece_ci=True)
    with pytest.raises(ValueError, match="kind"):
        reliability_diagram(table, kind="pie")
    with pytest.raises(ValueError, match="n_bins"):
        reliability_diagram(table, n_bins=0)
    bad = Table(*(np.asarray(a) for a in (table.bin_lower[:3], *list(table.__dict__.values())[1:])))
    with pytest.raises(ValueError, match="bin_lower"):
        reliability_diagram(bad)
    empty = _table(freq=[np.nan, np.nan], conf=[np.nan, np.nan], count=[0, 0])
    with pytest.raises(ValueError, match="non-empty"):
        reliability_diagram(empty)


# --------------------------------------------------------------------------------------------
# risk-coverage


def test_risk_coverage_curves():
    c1 = Curve(np.array([0.25, 0.5, 0.75, 1.0]), np.array([0.0, 0.0, 1 / 3, 0.5]),
               np.array([0.9, 0.8, 0.7, 0.6]), 0.2083)
    c2 = Curve(np.array([0.5, 1.0]), np.array([0.5, 0.5]), np.array([0.9, 0.6]), 0.5)
    ax = risk_coverage_plot({"ensemble": c1, "single": c2})
    curves = [line for line in ax.lines if (line.get_gid() or "").startswith("curve:")]
    assert len(curves) == 2
    np.testing.assert_allclose(curves[0].get_xdata(), c1.coverage)
    np.testing.assert_allclose(curves[0].get_ydata(), c1.risk)
    assert _legend_texts(ax) == ["ensemble (AURC 0.208)", "single (AURC 0.500)"]
    assert ax.get_xlabel() == "coverage"
    assert "risk" in ax.get_ylabel()
    fig, ax2 = plt.subplots()
    assert risk_coverage_plot(c1, ax=ax2) is ax2
    assert _legend_texts(ax2) == ["AURC 0.208"]
    ax3 = risk_coverage_plot([c1, c2], percent=True)
    np.testing.assert_allclose(ax3.lines[0].get_xdata(), 100 * c1.coverage)


def test_risk_coverage_validation():
    with pytest.raises(ValueError, match="risk"):
        risk_coverage_plot({"coverage": [0.5, 1.0], "risk": [0.1]})
    with pytest.raises(ValueError, match="coverage"):
        risk_coverage_plot({"coverage": [0.5, np.nan], "risk": [0.1, 0.2]})
    with pytest.raises(ValueError, match="oracle"):
        risk_coverage_plot({"coverage": [0.5, 1.0], "risk": [0.1, 0.2]}, oracle=True)
    with pytest.raises(TypeError, match="correct"):
        risk_coverage_plot(np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="correct"):
        risk_coverage_plot(np.array([0.1, 0.2]), np.array([1.0]))
    with pytest.raises(ValueError, match="curves_or_scores"):
        risk_coverage_plot({})


# --------------------------------------------------------------------------------------------
# uncertainty decomposition and member rewards


def _polygon_area(poly):
    x, y = poly.get_xy().T
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_uncertainty_decomposition_panels():
    rng = np.random.default_rng(0)
    d_in = decompose(rng.normal(2.0, 0.3, size=(300, 5)))
    d_out = decompose(rng.normal(0.3, 1.5, size=(200, 5)))
    fig = uncertainty_decomposition_plot(
        {"in-distribution": d_in, "out-of-distribution": d_out}, max_points=250
    )
    ax_sc, ax_y, ax_x = fig.axes
    sc_in = [c for c in ax_sc.collections if c.get_gid() == "scatter:0"][0]
    sc_out = [c for c in ax_sc.collections if c.get_gid() == "scatter:1"][0]
    assert len(sc_in.get_offsets()) == 250  # subsampled
    np.testing.assert_allclose(sc_out.get_offsets(), np.c_[d_out.aleatoric, d_out.epistemic])
    assert ax_sc.get_xlabel() == "aleatoric (nats)"
    assert ax_sc.get_ylabel().startswith("epistemic")
    assert ax_y.get_xlabel().startswith("epistemic") and ax_x.get_xlabel().startswith("aleatoric")
    # each histogram is a density: area 1
    for a in (ax_y, ax_x):
        steps = [p for p in a.patches if (p.get_gid() or "").startswith("hist:")]
        assert len(steps) == 2
        for p in steps:
            assert _polygon_area(p) == pytest.approx(1.0, rel=1e-6)
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["in-distribution", "out-of-distribution"]


def test_uncertainty_decomposition_kde_dataframe_and_ax():
    rng = np.random.default_rng(1)
    d = decompose(rng.normal(1.0, 1.0, size=(100, 4)), unit="bits")
    fig, axes = plt.subplots(1, 3)
    out = uncertainty_decomposition_plot(d.to_pandas(), kind="kde", y="margin_std", ax=axes)
    assert out is fig
    assert axes[0].get_ylabel() == "margin std over members"
    dens = [line for line in axes[1].lines if line.get_gid() == "density:0"][0]
    x, y = dens.get_xdata(), dens.get_ydata()
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.1)
    fig2 = uncertainty_decomposition_plot(d)
    assert fig2.axes[0].get_xlabel() == "aleatoric (bits)"
    # one member: epistemic exactly 0, still drawable
    fig3 = uncertainty_decomposition_plot(decompose(rng.normal(size=50)), kind="kde", log=False)
    assert len(fig3.axes) == 3


def test_uncertainty_decomposition_validation():
    with pytest.raises(ValueError, match="epistemic"):
        uncertainty_decomposition_plot({"a": {"aleatoric": [0.1, 0.2], "epistemic": [0.1]}})
    with pytest.raises(ValueError, match="aleatoric"):
        uncertainty_decomposition_plot({"aleatoric": [0.1, np.nan], "epistemic": [0.1, 0.2]})
    with pytest.raises(TypeError, match="decompositions"):
        uncertainty_decomposition_plot(np.zeros(3))
    with pytest.raises(ValueError, match="kind"):
        uncertainty_decomposition_plot({"aleatoric": [0.1], "epistemic": [0.1]}, kind="box")
    _, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="ax"):
        uncertainty_decomposition_plot({"aleatoric": [0.1], "epistemic": [0.1]}, ax=axes)


def test_member_reward_violins_centred():
    rng = np.random.default_rng(0)
    offsets = np.array([5.0, -3.0, 0.0])
    rewards = rng.normal(size=(400, 3)) + offsets
    ax = member_reward_plot(rewards)
    bodies = [c for c in ax.collections if c.get_gid() == "violin:0"]
    assert len(bodies) == 3
    medians = [c for c in ax.collections if type(c).__name__ == "LineCollection"][0]
    med_y = [seg[0, 1] for seg in medians.get_segments()]
    centred = rewards - rewards.mean(axis=0)
    np.testing.assert_allclose(med_y, np.median(centred, axis=0))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]
    assert ax.get_ylabel() == "reward (centred per member)"
    ax_raw = member_reward_plot(rewards, center=False)
    med_raw = [c for c in ax_raw.collections if type(c).__name__ == "LineCollection"][0]
    np.testing.assert_allclose([s[0, 1] for s in med_raw.get_segments()], np.median(rewards, axis=0))


def test_member_reward_groups_and_boxes():
    rng = np.random.default_rng(0)
    rc, rr = rng.normal(1, 1, size=(100, 4)), rng.normal(-1, 1, size=(100, 4))
    fig, ax = plt.subplots()
    out = member_reward_plot({"chosen": rc, "rejected": rr}, kind="box",
                             member_names=list("abcd"), ax=ax)
    assert out is ax
    assert len([p for p in ax.patches if p.get_gid() == "box:0"]) == 4
    assert len([p for p in ax.patches if p.get_gid() == "box:1"]) == 4
    assert _legend_texts(ax) == ["chosen", "rejected"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcd")
    with pytest.raises(ValueError, match="members"):
        member_reward_plot({"chosen": rc, "rejected": rr[:, :3]})
    with pytest.raises(ValueError, match="rewards"):
        member_reward_plot(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="rewards"):
        member_reward_plot(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="member_names"):
        member_reward_plot(rc, member_names=["x"])


# --------------------------------------------------------------------------------------------
# over-optimisation


def test_overoptimization_lines_and_colours():
    kl = np.linspace(0, 25, 26)
    rng = np.random.default_rng(0)
    objectives = {}
    for i, name in enumerate(["PPO", "PPO + mean-std", "PPO + worst-case"]):
        gold = np.sqrt(kl) - (0.15 - 0.04 * i) * kl
        objectives[name] = (kl[::-1], gold[::-1], np.sqrt(kl)[::-1] + rng.normal(0, 0.01, 26))
    ax = overoptimization_plot(objectives)
    gold_lines = [line for line in ax.lines if (line.get_gid() or "").startswith("gold:")]
    proxy_lines = [line for line in ax.lines if (line.get_gid() or "").startswith("proxy:")]
    assert len(gold_lines) == len(proxy_lines) == 3
    assert all(line.get_linestyle() == "-" for line in gold_lines)
    assert all(line.get_linestyle() == "--" for line in proxy_lines)
    for g, p in zip(gold_lines, proxy_lines):
        assert g.get_color() == p.get_color()
    assert len({g.get_color() for g in gold_lines}) == 3
    # sorted by KL
    np.testing.assert_allclose(gold_lines[0].get_xdata(), kl)
    np.testing.assert_allclose(gold_lines[0].get_ydata(), np.sqrt(kl) - 0.15 * kl)
    peak = [c for c in ax.collections if c.get_gid() == "peak:0"][0]
    g0 = np.sqrt(kl) - 0.15 * kl
    np.testing.assert_allclose(peak.get_offsets()[0], [kl[np.argmax(g0)], g0.max()])
    texts = _legend_texts(ax)
    assert texts[:3] == list(objectives) and texts[3:] == ["gold reward", "proxy reward"]
    assert ax.get_xlabel().startswith("KL") and ax.get_ylabel() == "reward"


def test_overoptimization_array_forms_and_validation():
    kl = np.linspace(0, 9, 10)
    fig, ax = plt.subplots()
    assert overoptimization_plot(kl, -kl, kl, ax=ax, sqrt_kl=True) is ax
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.sqrt(kl))
    ax2 = overoptimization_plot(np.stack([kl, kl]), np.stack([kl, -kl]), labels=["a", "b"])
    assert len(ax2.lines) == 2  # no proxy given
    assert _legend_texts(ax2) == ["a", "b", "gold reward"]
    with pytest.raises(ValueError, match="gold"):
        overoptimization_plot(kl, kl[:5], kl)
    with pytest.raises(ValueError, match="proxy"):
        overoptimization_plot(kl, kl, np.r_[kl[:-1], np.nan])
    with pytest.raises(ValueError, match="kl"):
        overoptimization_plot(-kl - 1, kl)
    with pytest.raises(ValueError, match=r"kl\['x'\]\.gold"):
        overoptimization_plot({"x": (kl, kl[:3], kl)})
    with pytest.raises(TypeError, match="gold"):
        overoptimization_plot(kl)


# --------------------------------------------------------------------------------------------
# style and saving


def test_paper_style_and_palette():
    before = dict(matplotlib.rcParams)
    with paper_style() as rc:
        assert matplotlib.rcParams["pdf.fonttype"] == 42
        assert matplotlib.rcParams["font.size"] == PAPER_RC["font.size"] == rc["font.size"]
        assert list(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]) == list(PALETTE)
    assert matplotlib.rcParams["font.size"] == before["font.size"]
    # Okabe-Ito colours, all distinct
    assert len(set(PALETTE)) == 8 and PALETTE[0] == "#0072B2"


def test_save_figure_formats(tmp_path, table):
    fig = reliability_diagram(table)
    written = save_figure(fig, tmp_path / "sub" / "reliability", formats=("pdf", "svg", "png"))
    assert [p.name for p in written] == ["reliability.pdf", "reliability.svg", "reliability.png"]
    for p in written:
        assert p.stat().st_size > 1000
    pdf = written[0].read_bytes()
    assert pdf.startswith(b"%PDF")
    assert b"FontFile2" in pdf and b"Type3" not in pdf  # TrueType (fonttype 42) text, not Type 3
    svg = written[1].read_text()
    assert "<text" in svg and "observed frequency" in svg  # real text, not paths
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a suffix alone selects the format; defaults are pdf + png
    only = save_figure(fig, tmp_path / "one.svg")
    assert [p.name for p in only] == ["one.svg"]
    default = save_figure(fig.axes[0], str(tmp_path / "two"))
    assert [p.suffix for p in default] == [".pdf", ".png"]
    with pytest.raises(ValueError, match="formats"):
        save_figure(fig, tmp_path / "x", formats=("doc",))
    with pytest.raises(TypeError, match="fig"):
        save_figure(None, tmp_path / "x")


def test_to_pandas_results_accepted(table):
    df = pd.DataFrame(table.__dict__)
    fig = reliability_diagram(df)
    np.testing.assert_allclose(
        [b.get_height() for b in _bars(fig.axes[0], "bars:0")],
        table.observed_frequency[table.count > 0],
    )

"""The HTML page of :func:`auq.report.write_report`: tables, figure captions, styles (not public)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pandas as pd


def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(x: Any) -> str:
    if isinstance(x, dict) and "estimate" in x:
        s = f"{x['estimate']:.4f}"
        if "low" in x:
            s += f" <span class='ci'>[{x['low']:.4f}, {x['high']:.4f}] {html.escape(x.get('method', ''))}</span>"
            if not x.get("contains_estimate", True):
                s += " <span class='warn'>(interval excludes the estimate: bias exceeds spread)</span>"
        return s
    if isinstance(x, float):
        return f"{x:.4f}"
    return html.escape(str(x))


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("metric", "value")) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table><thead><tr><th>{header[0]}</th><th>{header[1]}</th></tr></thead><tbody>{body}</tbody></table>"


def _frame_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name or ""] + list(df.columns))
    rows = []
    for idx, row in df.iterrows():
        cells = "".join(f"<td>{_fmt(v)}</td>" for v in row.tolist())
        rows.append(f"<tr><td>{html.escape(str(idx))}</td>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{font-size:1.3em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:.6em 0 1em}
td,th{border:1px solid #ddd;padding:.3em .7em;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f4f4f4}.ci{color:#777;font-size:.9em}figure{margin:1em 0}figure img{max-width:100%}
figcaption{color:#555;font-size:.92em}.note{color:#555;font-size:.92em}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:.5em .8em;font-weight:600}.warn{color:#a15c00}
"""


def _figure_of(obj):
    return obj if hasattr(obj, "savefig") else obj.figure


_CAPTIONS = {
    "reliability": "Reliability diagram (order-free: confidence max(p, 1-p) against the observed "
    "frequency of the predicted side winning); bars below: pairs per bin.",
    "risk_coverage": "Risk-coverage: error rate among the most certain pairs as coverage grows, "
    "for each uncertainty score (lower is better; AURC in the legend).",
    "decomposition": "Uncertainty decomposition per pair (entropy view, nats): aleatoric against "
    "epistemic, and their distributions.",
    "ood": "Out of distribution: the training-density percentile (ood) of the evaluated pairs and, "
    "when given, of shifted pairs; AUROC of telling them apart in the legend.",
}


def _render_html(title, metrics, images, recal_rows) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='sub'>{metrics['n_pairs']} preference pairs · 95% bootstrap intervals in brackets"
        " (with their method)</p>",
        *[f"<p class='warning'>Warning: {html.escape(w)}</p>" for w in metrics["warnings"]],
        "<h2>Summary</h2>",
        _table([
            ("preference accuracy", metrics["accuracy"]),
            ("NLL (nats)", metrics["nll"]),
            ("Brier score", metrics["brier"]),
            (f"pairwise ECE (L1, {metrics['n_bins']} equal-mass bins)", metrics["ece"]["pairwise_l1"]),
        ]),
        "<h2>Calibration</h2>",
        f"<p class='note'>Binning: {html.escape(metrics['binning']['rule'])} "
        f"({metrics['binning']['pairs_per_bin']:.0f} pairs per bin).</p>",
        _table([(k, v) for k, v in metrics["ece"].items()], ("calibration error", "value")),
        "<p class='note'>Pairwise errors bin the confidence max(p, 1-p) (equal-mass bins; "
        f"pairwise_l1_equal_width: {metrics['binning']['equal_width_bins_over_0_1']} equal-width bins over "
        "[0, 1]); the mirrored ones score each pair in both orders. The binned ECE is biased upwards "
        "by finite-sample noise: an interval that excludes its estimate says this bias exceeds "
        "the spread, not where the calibration error lies.</p>",
        _table(
            [(k, v) for k, v in metrics["brier_decomposition"].items() if k != "note"],
            ("Brier decomposition (mirrored pairs)", "value"),
        ),
        "<p class='note'>Brier = reliability − resolution + uncertainty + binning_term. The "
        "binning_term (the Brier score of the raw forecasts minus that of the bin-averaged ones) "
        "is the within-bin forecast variance minus twice the within-bin forecast–outcome "
        "covariance: it can be negative, and is not a variance.</p>",
    ]
    if recal_rows is not None:
        rc = metrics["recalibration"]
        extra = f", fitted temperature {rc['temperature']:.3f}" if "temperature" in rc else ""
        parts += [
            "<h2>Recalibration</h2>",
            f"<p>{html.escape(rc['method'])} fitted on {rc['n_fit']} pairs, evaluated on "
            f"{rc['n_heldout']} held-out pairs{extra}.</p>",
            *[f"<p class='warning'>Warning: {html.escape(w)}</p>" for w in rc.get("warnings", [])],
            _frame_table(recal_rows),
        ]
    if "ood" in metrics:
        o = metrics["ood"]
        rows = [(f"AUROC of {k} (shifted = positive)", v) for k, v in o["auroc"].items()]
        rows += [(k, o[k]) for k in ("ood_in_median", "ood_in_above_0.99", "ood_out_median", "ood_out_above_0.99") if k in o]
        parts += [
            "<h2>Out of distribution</h2>",
            f"<p>{o['n_in']} evaluated pairs" + (f", {o['n_out']} shifted pairs" if o["n_out"] else "") + ".</p>",
            _table(rows) if rows else "",
            f"<p class='note'>{html.escape(o['note'])}</p>",
        ]
    unc = metrics["uncertainty"]
    if unc:
        df = pd.DataFrame(unc).T
        df.index.name = "uncertainty score"
        parts += ["<h2>Selective prediction and uncertainty</h2>", _frame_table(df)]
    parts.append("<h2>Figures</h2>")
    for name, uri in images.items():
        parts.append(
            f"<figure><img alt='{name}' src='{uri}'><figcaption>{html.escape(_CAPTIONS.get(name, name))}"
            "</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)

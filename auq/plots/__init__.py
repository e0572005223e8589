"""auq.plots: publication-quality matplotlib figures from calibration and estimator results.

Every function draws from *results* (a :class:`~auq.calibration.ReliabilityTable`, a
:class:`~auq.calibration.RiskCoverage`, a :class:`~auq.estimators.Decomposition`, plain arrays)
and knows no model or trainer. Each takes ``ax=`` (a figure is created in :func:`paper_style`
when it is ``None``) and returns the Axes, or the Figure for multi-panel figures. Colours are the
colour-blind-safe Okabe–Ito palette; :func:`save_figure` writes vector PDF/SVG with real text and
PNG.

==========================================  ==========================================================
:func:`reliability_diagram`                 observed frequency vs confidence, gap, counts, ECE (+ CI)
:func:`risk_coverage_plot`                  selective risk vs coverage, AURC, optional oracle
:func:`uncertainty_decomposition_plot`      aleatoric vs epistemic per pair; distributions per group
:func:`member_reward_plot`                  reward distribution of each ensemble member
:func:`overoptimization_plot`               gold (solid) and proxy (dashed) reward vs KL
:func:`ood_histogram`                       an out-of-distribution score, in-domain vs shifted pairs
:func:`conformal_coverage_plot`             conformal set coverage vs α, with the 1 − α target
:func:`guaranteed_risk_coverage_plot`       risk–coverage with the certified (LTT) operating point
==========================================  ==========================================================
"""

from auq.plots._style import OKABE_ITO, PALETTE, PAPER_RC, paper_style, save_figure
from auq.plots.conformal import conformal_coverage_plot, guaranteed_risk_coverage_plot
from auq.plots.ood import ood_histogram
from auq.plots.overoptimization import overoptimization_plot
from auq.plots.reliability import ece_from_table, reliability_diagram
from auq.plots.selective import risk_coverage_plot
from auq.plots.uncertainty import member_reward_plot, uncertainty_decomposition_plot

__all__ = [
    "OKABE_ITO",
    "PALETTE",
    "PAPER_RC",
    "conformal_coverage_plot",
    "ece_from_table",
    "guaranteed_risk_coverage_plot",
    "member_reward_plot",
    "ood_histogram",
    "overoptimization_plot",
    "paper_style",
    "reliability_diagram",
    "risk_coverage_plot",
    "save_figure",
    "uncertainty_decomposition_plot",
]

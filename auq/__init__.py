"""auq: alignment uncertainty quantification.

Uncertainty-aware reward models, uncertainty estimators, calibration, and uncertainty-aware
preference optimisation, all speaking one currency: member rewards ``[n_pairs, n_members]``
for the chosen and the rejected side of each preference pair.
"""

__version__ = "0.1.0"

"""auq.active: which preference pairs to label next.

* :func:`acquisition_scores` -- score unlabelled pairs from member rewards ``[n_pairs, K]`` or a
  Gaussian margin: ``"random"``, ``"bald"``, ``"margin_variance"``, ``"ucb"``, ``"thompson"``
  (double Thompson sampling over members), ``"information_gain"`` (of a Bayesian last layer,
  :func:`information_gain`); the formulas are in :mod:`auq.active.acquisition`.
* :func:`select_batch`, :func:`k_center_greedy` -- a batch spread out in feature space instead of
  the top-``k`` near-duplicates.
* :func:`run_active_learning` -- the loop over cached features with a :class:`SimulatedOracle`;
  the models refitted each round are :class:`LaplaceLearner` (closed form) and
  :class:`HeadsLearner` (anchored bootstrap heads trained to convergence).

Examples
--------
>>> from auq.active import acquisition_scores, select_batch
>>> scores = acquisition_scores("bald", [[2.0, -2.0], [3.0, 3.0], [0.5, -0.4]], [[0.0, 0.0]] * 3)
>>> select_batch(scores, 1, diversity=None).tolist()
[0]
"""

from auq.active.acquisition import ACQUISITIONS, acquisition_scores, information_gain
from auq.active.diversity import k_center_greedy, select_batch
from auq.active.learners import HeadsLearner, LaplaceLearner
from auq.active.loop import ActiveLearningResult, SimulatedOracle, run_active_learning

__all__ = [
    "ACQUISITIONS",
    "ActiveLearningResult",
    "HeadsLearner",
    "LaplaceLearner",
    "SimulatedOracle",
    "acquisition_scores",
    "information_gain",
    "k_center_greedy",
    "run_active_learning",
    "select_batch",
]

"""An active-learning loop over cached features, with a simulated oracle.

Each round: the learner scores the unlabelled pool, :func:`auq.active.acquisition_scores` ranks it,
:func:`auq.active.select_batch` picks a diverse batch, the oracle reveals those labels, the learner
is refitted from scratch on every label so far, and the test metrics are recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from auq._checks import as_float_array, check_choice, check_int, check_labels
from auq.calibration import negative_log_likelihood, preference_accuracy

from .acquisition import ACQUISITIONS, acquisition_scores
from .diversity import select_batch
from .learners import check_pair_features

logger = logging.getLogger(__name__)

__all__ = ["ActiveLearningResult", "SimulatedOracle", "run_active_learning"]


class SimulatedOracle:
    """Reveals the labels of a pool of pairs on request, and counts the requests.

    Parameters
    ----------
    labels : array-like, shape [n_pool]
        Each pair's label: the probability (1, 0 or a vote share) that its side ``a`` is preferred.

    Attributes
    ----------
    n_queries : int
        Labels revealed so far (a pair asked twice counts twice, as a paid annotator would).
    queried : list of int
        The pool indices asked for, in order.

    Examples
    --------
    >>> oracle = SimulatedOracle([1.0, 0.0, 1.0])
    >>> oracle.query([2, 0]).tolist(), oracle.n_queries
    ([1.0, 1.0], 2)
    """

    def __init__(self, labels: Any):
        y = as_float_array(labels, "labels", ndim=1)
        check_labels(y, "labels")
        self._labels = y
        self.n_queries = 0
        self.queried: list[int] = []

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def query(self, indices: Any) -> np.ndarray:
        """Labels of the pool pairs ``indices`` (each counted as one query)."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be a 1-D array of integers, got {idx.dtype} with shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self) - 1}] (the pool), got {idx.min()}..{idx.max()}")
        self.n_queries += int(idx.size)
        self.queried.extend(int(i) for i in idx)
        return self._labels[idx].copy()


@dataclass(frozen=True, eq=False)
class ActiveLearningResult:
    """Per-round metrics of :func:`run_active_learning`.

    Attributes
    ----------
    history : pandas.DataFrame
        One row per round (round 0 = the random start): ``round``, ``n_labels``, ``n_queries`` (the
        oracle's count), ``accuracy`` and ``nll`` on the test pairs, ``fit_seconds``,
        ``acquisition`` and ``seed``.
    labelled : numpy.ndarray
        Pool indices in the order they were labelled.
    """

    history: Any
    labelled: np.ndarray

    def to_pandas(self):
        """The per-round table (a copy of :attr:`history`)."""
        return self.history.copy()


def run_active_learning(
    learner: Any,
    features_a: Any,
    features_b: Any,
    oracle: SimulatedOracle,
    test_features_a: Any,
    test_features_b: Any,
    test_targets: Any = None,
    *,
    acquisition: str = "bald",
    n_initial: int = 20,
    batch_size: int = 20,
    n_rounds: int = 10,
    diversity: str | None = "k_center",
    candidate_factor: float = 4.0,
    kappa: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> ActiveLearningResult:
    """Label a pool in rounds, chosen by ``acquisition``; test accuracy and NLL after each round.

    Parameters
    ----------
    learner : LaplaceLearner, HeadsLearner or any object with ``fit``/``predict`` as described in
        :mod:`auq.active.learners`.
    features_a, features_b : array-like, shape [n_pool, H]
        Pooled features of the two sides of each pool pair (e.g. from
        :class:`auq.models.FeatureCache` or :func:`auq.models.encode_dataset`). Their order is the
        oracle's: label 1 means side ``a`` is preferred.
    oracle : SimulatedOracle
        Reveals the pool's labels; ``len(oracle)`` must be ``n_pool``.
    test_features_a, test_features_b : array-like, shape [n_test, H]
    test_targets : array-like, shape [n_test], optional
        Probability that test side ``a`` is preferred (default 1: ``a`` is the chosen side).
    acquisition : {"random", "bald", "margin_variance", "ucb", "thompson", "information_gain"}
        See :mod:`auq.active.acquisition`.
    n_initial : int, default 20
        Labels drawn uniformly at random before the first fit.
    batch_size : int, default 20
        Labels acquired per round.
    n_rounds : int, default 10
        Acquisition rounds after the start; ``n_initial + n_rounds·batch_size <= n_pool``.
    diversity, candidate_factor :
        As for :func:`auq.active.select_batch`; the pairs' feature *sums* ``f(a) + f(b)`` (where
        a pair lies, whichever side is stored first) are the points k-center spreads. The
        difference ``f(a) - f(b)`` would leak the label: in hh-rlhf ``a`` is always the chosen
        side. ``acquisition="random"`` always draws its batch uniformly (no k-center), so that it
        stays the plain baseline.
    kappa : float
        The ``"ucb"`` width.
    seed : int, default 0
        Seed of the initial draw, of ``"random"`` and of ``"thompson"``: independent streams
        spawned from ``numpy.random.SeedSequence(seed)`` (one for the initial draw, one per
        round), so no two seeds or rounds share a stream.
    progress : bool, default False
        A tqdm bar over the rounds.

    Returns
    -------
    ActiveLearningResult

    Examples
    --------
    >>> oracle = SimulatedOracle(labels)                                     # doctest: +SKIP
    >>> res = run_active_learning(LaplaceLearner(model), fa, fb, oracle, ta, tb,
    ...                           acquisition="bald", n_initial=20, batch_size=20)  # doctest: +SKIP
    >>> res.history[["n_labels", "accuracy", "nll"]]                         # doctest: +SKIP
    """
    import pandas as pd

    check_choice(acquisition, "acquisition", ACQUISITIONS)
    a, b = check_pair_features(features_a, features_b)
    ta, tb = check_pair_features(test_features_a, test_features_b, "test_features")
    if ta.shape[1] != a.shape[1]:
        raise ValueError(f"test features have {ta.shape[1]} columns, the pool's have {a.shape[1]}")
    if not isinstance(oracle, SimulatedOracle):
        raise TypeError(f"oracle must be a SimulatedOracle, got {type(oracle).__name__}")
    n = a.shape[0]
    if len(oracle) != n:
        raise ValueError(f"the oracle holds {len(oracle)} labels, the pool has {n} pairs")
    if test_targets is None:
        tt = np.ones(ta.shape[0])
    else:
        tt = as_float_array(test_targets, "test_targets", ndim=1)
        check_labels(tt, "test_targets")
        if tt.shape[0] != ta.shape[0]:
            raise ValueError(f"test_targets must have one value per test pair ({ta.shape[0]}), got {tt.shape[0]}")
    n_initial = check_int(n_initial, "n_initial", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    n_rounds = check_int(n_rounds, "n_rounds", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    if n_initial + n_rounds * batch_size > n:
        raise ValueError(
            f"batch_size: n_initial + n_rounds * batch_size = {n_initial} + {n_rounds} * {batch_size} "
            f"exceeds the pool of {n} pairs"
        )
    where = a + b  # orientation-free: swapping the sides of a pair does not move it
    streams = np.random.SeedSequence(seed).spawn(n_rounds + 1)  # [0]: initial draw, [r]: round r
    labelled = list(np.random.default_rng(streams[0]).choice(n, size=n_initial, replace=False))
    targets = list(oracle.query(np.asarray(labelled, dtype=np.int64)))
    if acquisition == "random":
        diversity = None
    rows = []
    rounds = range(n_rounds + 1)
    if progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc=f"active learning ({acquisition})")
    for r in rounds:
        if r > 0:
            mask = np.ones(n, dtype=bool)
            mask[labelled] = False
            pool = np.flatnonzero(mask)
            pred = learner.predict(a[pool], b[pool])
            scores = acquisition_scores(
                acquisition, pred["rewards_a"], pred["rewards_b"],
                margin_mean=pred.get("margin_mean"), margin_var=pred.get("margin_var"),
                kappa=kappa, seed=int(streams[r].generate_state(1)[0]),
            )
            pick = pool[select_batch(scores, batch_size, features=where[pool], diversity=diversity,
                                     candidate_factor=candidate_factor)]
            labelled.extend(int(i) for i in pick)
            targets.extend(oracle.query(pick))
        idx = np.asarray(labelled, dtype=np.int64)
        t0 = time.perf_counter()
        learner.fit(a[idx], b[idx], np.asarray(targets))
        fit_s = time.perf_counter() - t0
        prob = np.clip(learner.predict(ta, tb)["prob"], 0.0, 1.0)
        rows.append({
            "round": r, "n_labels": len(labelled), "n_queries": oracle.n_queries,
            "accuracy": preference_accuracy(prob, tt), "nll": negative_log_likelihood(prob, tt),
            "fit_seconds": fit_s, "acquisition": acquisition, "seed": seed,
        })  # fmt: skip
        logger.info("active learning %s round %d: %d labels, accuracy %.4f, nll %.4f",
                    acquisition, r, len(labelled), rows[-1]["accuracy"], rows[-1]["nll"])
    return ActiveLearningResult(history=pd.DataFrame(rows), labelled=np.asarray(labelled, dtype=np.int64))

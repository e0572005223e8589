"""Benchmark: are auq.conformal's guarantees kept on real preference pairs?

Data and model. All 1,734 bundled hh-rlhf pairs (``auq.data.load_hh_rlhf()``), pooled features of
the real MiniLM trunk (frozen, ``--max-length`` tokens, kept in a ``FeatureCache`` under
``--cache`` so reruns skip the trunk), and a :class:`~auq.models.LaplaceRewardModel` fitted in
closed form. Every pair is scored *held out* by cross-fitting: the pairs are cut into ``--folds``
folds and each fold is scored by a model fitted on the other folds, so no pair's score comes from a
model trained on it (calibration and test pairs are then exchangeable, as conformal needs).

Splits. ``--splits`` random calibration/test splits of the scored pairs (``--cal-frac`` of them for
calibration). For each target error ``α`` and each uncertainty score:

* selective prediction (:func:`auq.conformal.selective_threshold`, Learn then Test with exact
  binomial p-values, ``δ = --delta``): the fraction of splits whose *test* error among the answered
  pairs exceeds ``α`` (a violation; a split that answers nothing has none), with its binomial
  Monte-Carlo error ``sqrt(v(1-v)/S)``; the mean test coverage; the accuracy among answered pairs;
  and the random-abstention baseline at the same coverage (answering a random subset of the test
  pairs: its expected accuracy is the overall test accuracy). Beside it, the naive plug-in rule
  (largest threshold whose *calibration* error is <= α, no correction), to show what the
  correction buys.
* prediction sets (:class:`auq.conformal.PairSetPredictor`): mean test coverage (guarantee:
  ``>= 1 - α`` in expectation over splits) ± its Monte-Carlo error, and the share of singletons.

Note: the LTT guarantee is about the population error of the chosen threshold; a finite test set
adds its own sampling noise, so the empirical violation rate measured here is an upper estimate.

Usage::

    python benchmarks/conformal_validity.py                      # full run (encodes ~3,500 texts once)
    python benchmarks/conformal_validity.py --splits 200 --delta 0.1 --alphas 0.2 0.3 0.4
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from auq.conformal import (  # noqa: E402  (after the path fix above)
    PairSetPredictor,
    pair_correctness,
    selective_threshold,
)
from auq.data import load_hh_rlhf  # noqa: E402
from auq.demo import default_backbone  # noqa: E402
from auq.models import FeatureCache, LaplaceRewardModel, score_features  # noqa: E402


def cross_fitted_scores(fc: np.ndarray, fr: np.ndarray, model: LaplaceRewardModel, folds: int, seed: int) -> dict:
    """Held-out ``prob``, ``total``, ``epistemic`` of every pair (each fold scored by the others' fit)."""
    n = fc.shape[0]
    out = {k: np.empty(n) for k in ("prob", "total", "epistemic")}
    parts = np.array_split(np.random.default_rng(seed).permutation(n), folds)
    for part in parts:
        train = np.setdiff1d(np.arange(n), part)
        model.fit_features(fc[train], fr[train])
        dec = score_features(model, fc[part], fr[part], device="cpu").decompose()
        for k in out:
            out[k][part] = getattr(dec, k)
    return out


def naive_threshold(scores: np.ndarray, correct: np.ndarray, alpha: float) -> float:
    """Largest threshold whose calibration error among answered pairs is <= alpha (no correction)."""
    grid = np.unique(scores)
    order = np.argsort(scores, kind="stable")
    n_ans = np.searchsorted(scores[order], grid, side="right")
    err = np.concatenate([[0.0], np.cumsum(1.0 - correct[order])])[n_ans] / n_ans
    ok = np.flatnonzero(err <= alpha)
    return float(grid[ok[-1]]) if ok.size else -np.inf


def run(args: argparse.Namespace) -> None:
    hh = load_hh_rlhf()
    model = LaplaceRewardModel.from_backbone(default_backbone(), prior_precision="auto")  # as measured in the README
    t0 = time.perf_counter()
    fc, fr = FeatureCache(args.cache).features(
        model, hh, collator=model.make_collator(max_length=args.max_length), device="cpu", progress=False
    )
    print(f"features of {len(hh)} pairs (MiniLM, max_length {args.max_length}): {time.perf_counter() - t0:.1f} s")
    sc = cross_fitted_scores(fc, fr, model, args.folds, args.seed)
    targets = np.ones(len(hh)) if hh.targets is None else np.asarray(hh.targets, dtype=np.float64)
    correct = pair_correctness(sc["prob"], targets)
    n = len(hh)
    n_cal = int(round(args.cal_frac * n))
    print(f"held-out accuracy ({args.folds}-fold cross-fit): {correct.mean():.3f} over {n} pairs; "
          f"{args.splits} splits, {n_cal} calibration / {n - n_cal} test pairs, delta = {args.delta}\n")
    rng = np.random.default_rng(args.seed + 1)
    splits = [rng.permutation(n) for _ in range(args.splits)]
    S = args.splits

    def mc(v: float) -> float:
        return float(np.sqrt(v * (1 - v) / S))

    print("selective prediction (Learn then Test, exact binomial); violation = test error among answered > alpha")
    head = (f"{'score':<10}{'grid':>6}{'starts':>7}{'alpha':>6}{'viol. rate':>16}{'certified':>10}{'coverage':>10}{'acc answered':>13}"
            f"{'random abst.':>13}{'naive viol.':>13}{'naive cov.':>11}")
    print(head)
    print("-" * len(head))
    # "data": every distinct calibration score is a candidate (the default); "fixed": 200 thresholds
    # on [0, log 2] fixed in advance (the exact LTT setting; only for the total entropy, in nats)
    variants = [(nm, "data", st) for nm in args.scores for st in args.starts]
    if "total" in args.scores:
        variants += [("total", "fixed", st) for st in args.starts]
    fixed = np.linspace(0.0, np.log(2.0), 200)
    for name, grid, starts, alpha in ((nm, g, st, a) for nm, g, st in variants for a in args.alphas):
        s = sc[name]
        viol, cert, cov, acc, base, nviol, ncov = [], [], [], [], [], [], []
        for perm in splits:
            cal, test = perm[:n_cal], perm[n_cal:]
            res = selective_threshold(s[cal], correct[cal], alpha, args.delta, starts=starts,
                                  thresholds=fixed if grid == "fixed" else None)
            ans = s[test] <= res.threshold
            cert.append(res.certified)
            cov.append(ans.mean())
            base.append(correct[test].mean())
            if ans.any():
                e = 1.0 - correct[test][ans].mean()
                viol.append(e > alpha)
                acc.append(1.0 - e)
            else:
                viol.append(False)
            lam = naive_threshold(s[cal], correct[cal], alpha)
            nans = s[test] <= lam
            ncov.append(nans.mean())
            nviol.append(bool(nans.any()) and 1.0 - correct[test][nans].mean() > alpha)
        v, nv = float(np.mean(viol)), float(np.mean(nviol))
        acc_s = f"{np.mean(acc):.3f}" if acc else "—"
        print(f"{name:<10}{grid:>6}{starts:>7}{alpha:>6.2f}{v:>9.3f} ± {mc(v):.3f}{np.mean(cert):>10.2f}{np.mean(cov):>10.3f}"
              f"{acc_s:>13}{np.mean(base):>13.3f}{nv:>13.3f}{np.mean(ncov):>11.3f}")
    print("\nprediction sets {chosen}/{rejected}/{both} (split conformal, nonconformity 1 - p(true side))")
    head = f"{'alpha':>6}{'target':>8}{'mean coverage':>20}{'min split':>11}{'singletons':>12}"
    print(head)
    print("-" * len(head))
    for alpha in args.alphas:
        cov, single = [], []
        for perm in splits:
            cal, test = perm[:n_cal], perm[n_cal:]
            sets = PairSetPredictor(alpha).fit(sc["prob"][cal], targets[cal]).predict(sc["prob"][test])
            cov.append(sets.coverage(targets[test]))
            single.append(float((sets.size == 1).mean()))
        se = float(np.std(cov, ddof=1) / np.sqrt(S))
        print(f"{alpha:>6.2f}{1 - alpha:>8.2f}{np.mean(cov):>13.4f} ± {se:.4f}{np.min(cov):>11.3f}{np.mean(single):>12.3f}")
    if args.figures:
        figures(args, sc, correct, targets, splits, n_cal)


def figures(args: argparse.Namespace, sc: dict, correct: np.ndarray, targets: np.ndarray, splits: list, n_cal: int) -> None:
    """Coverage against alpha over all splits; risk-coverage of the first split's test pairs with
    the rule certified on its calibration pairs (alpha = the largest of --alphas)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from auq.conformal import coverage_curve
    from auq.plots import conformal_coverage_plot, guaranteed_risk_coverage_plot, save_figure

    levels = np.arange(1, 10) * 0.05
    covs = np.stack([coverage_curve(sc["prob"][p[:n_cal]], targets[p[:n_cal]], sc["prob"][p[n_cal:]],
                                    targets[p[n_cal:]], levels).coverage for p in splits])
    ax = conformal_coverage_plot(levels, covs, n_calibration=n_cal, title="pair sets, hh-rlhf (held out)")
    save_figure(ax.figure, os.path.join(args.figures, "conformal_coverage"), formats=["png"])
    plt.close(ax.figure)
    cal, test = splits[0][:n_cal], splits[0][n_cal:]
    alpha = max(args.alphas)
    res = selective_threshold(sc["total"][cal], correct[cal], alpha, args.delta, starts=max(args.starts))
    ax = guaranteed_risk_coverage_plot(sc["total"][test], correct[test], res,
                                       title=f"certified abstention, α = {alpha:g} (test half)")
    save_figure(ax.figure, os.path.join(args.figures, "conformal_risk_coverage"), formats=["png"])
    plt.close(ax.figure)
    print(f"figures written to {args.figures}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.2, 0.3, 0.35, 0.4, 0.45])
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--starts", type=int, nargs="+", default=[1, 3])
    p.add_argument("--cal-frac", type=float, default=0.5)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--scores", nargs="+", default=["total", "epistemic"], choices=["total", "epistemic"])
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "auq-conformal-validity"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--figures", default=None, help="folder for the two figures (PNG)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    run(args)


if __name__ == "__main__":
    main()

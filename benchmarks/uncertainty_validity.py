"""Does each uncertainty signal do what its name says, on real data?

For every model kind (frozen all-MiniLM-L6-v2 trunk: ``heads`` K=8, ``laplace`` with 32 posterior
samples, ``mc-dropout`` head scope T=16, heteroscedastic ``heads``) trained with auq's default
recipe on the bundled hh-rlhf pairs (a 25% test split held out), and for every signal the model
hands out (``total``, ``aleatoric``, ``epistemic``, ``margin_std``, per-response ``reward_std``
anchored on the training responses, the feature-density ``ood`` percentile), it measures:

* **OOD AUROC**: held-out hh-rlhf pairs (in) vs the bundled MT-Bench pairs (out, a real shift:
  instruction following, writing, maths and code instead of harmless chat), and synthetic pairs
  with a known reward vs the same pairs shifted (``shift=3``);
* **epistemic vs training size**: mean epistemic and margin std on the held-out pairs for 200,
  800 and all training pairs (must fall as data grows);
* **selective prediction**: accuracy at 50% and 80% coverage when abstaining on the most
  uncertain pairs by each signal, next to random abstention (mean ± std over 2,000 random draws);
* **aleatoric vs annotator disagreement**: Spearman of each signal with the vote entropy of the
  MT-Bench pairs that have two or more votes;
* **calibration**: pairwise ECE before and after temperature scaling (fitted on one half of the
  held-out pairs, evaluated on the other), with bootstrap intervals.

Run ``python benchmarks/uncertainty_validity.py`` (7.5 minutes on 2 CPU cores, a third of it
computing the MiniLM features once; ``--quick`` for a smaller run). Trunk features are stored in
``--cache`` and shared by every kind, seed and training size, so the trunk runs once per text.
Prints markdown tables and writes them with all numbers to ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from auq.calibration import (
    TemperatureScaling,
    bootstrap_ci,
    ood_auroc,
    pairwise_calibration_error,
    pairwise_correctness,
)
from auq.data import load_hh_rlhf, load_mt_bench, make_synthetic_preferences
from auq.demo import default_backbone
from auq.models import score
from auq.training import HEADS_RECIPE, RewardModelTrainer, RewardTrainerConfig

KINDS = ("heads", "laplace", "mc-dropout", "heads-hetero")
SIGNALS = ("total", "aleatoric", "epistemic", "margin_std", "reward_std", "ood")
COVERAGES = (0.5, 0.8)


def build(kind: str, backbone: str, seed: int):
    from auq.models import LaplaceRewardModel, MCDropoutRewardModel, RewardEnsemble

    if kind == "heads":
        return RewardEnsemble.from_backbone(backbone, kind="heads", n_members=8, seed=seed)
    if kind == "heads-hetero":
        return RewardEnsemble.from_backbone(backbone, kind="heads", n_members=8, seed=seed, heteroscedastic=True)
    if kind == "laplace":
        return LaplaceRewardModel.from_backbone(backbone, n_samples=32, seed=seed)
    if kind == "mc-dropout":
        return MCDropoutRewardModel.from_backbone(backbone, n_samples=16, scope="head", seed=seed)
    raise ValueError(kind)


def train(kind: str, backbone: str, data, seed: int, args) -> torch.nn.Module:
    model = build(kind, backbone, seed)
    # the default recipe of `auq train` for heads on a frozen trunk (anchored, to convergence); the
    # single MC-dropout head trains the same way without bootstrap or anchors; laplace is closed-form
    recipe = dict(HEADS_RECIPE)
    if kind == "mc-dropout":
        recipe.update(bootstrap=False, prior_precision=None)
    config = RewardTrainerConfig(
        output_dir=os.path.join(args.workdir, "runs", f"{kind}-{seed}-{len(data)}"),
        max_length=args.max_length,
        seed=seed,
        feature_cache_dir=args.cache,
        disable_tqdm=True,
        logging_steps=10_000,
        **({} if kind == "laplace" else recipe),
    )
    RewardModelTrainer(model, config, data).train()
    return model


def signals(preds) -> dict[str, np.ndarray]:
    df = preds.to_pandas()
    out = {name: df[name].to_numpy(np.float64) for name in ("total", "aleatoric", "epistemic", "margin_std")}
    out["reward_std"] = np.maximum(df["reward_std_chosen"], df["reward_std_rejected"]).to_numpy(np.float64)
    if "ood" in df:
        out["ood"] = df["ood"].to_numpy(np.float64)
    return out


def selective(preds, sig: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, dict[str, float]]:
    prob = preds.decompose().prob
    correct = pairwise_correctness(prob, preds.targets)
    n = len(correct)
    res: dict[str, dict[str, float]] = {}
    for c in COVERAGES:
        k = int(round(c * n))
        draws = np.array([correct[rng.choice(n, k, replace=False)].mean() for _ in range(2000)])
        res[f"random@{c:.0%}"] = {"mean": float(draws.mean()), "std": float(draws.std())}
        for name, u in sig.items():
            keep = np.argsort(u, kind="stable")[:k]
            res.setdefault(name, {})[f"acc@{c:.0%}"] = float(correct[keep].mean())
    res["all"] = {"acc": float(correct.mean())}
    return res


def disagreement(ds) -> tuple[np.ndarray, np.ndarray]:
    votes = ds.votes
    n_votes = votes.sum(1)
    q = votes[:, 0] / n_votes
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(q > 0, q * np.log(q), 0.0) + np.where(q < 1, (1 - q) * np.log(1 - q), 0.0))
    return h, n_votes >= 2


def calibration(preds, seed: int) -> dict[str, object]:
    d = preds.decompose()
    prob, margin = d.prob, np.log(d.prob) - np.log1p(-d.prob)
    rng = np.random.default_rng(seed)
    # order-free: each pair's sides swapped by a fixed coin, so labels are 0/1
    flip = rng.random(len(prob)) < 0.5
    y = np.where(flip, 1.0 - preds.targets, preds.targets)
    z = np.where(flip, -margin, margin)
    half = rng.permutation(len(prob))
    fit, ev = half[: len(prob) // 2], half[len(prob) // 2 :]
    ts = TemperatureScaling().fit(z[fit], y[fit])
    before = 1.0 / (1.0 + np.exp(-z[ev]))
    after = ts.predict_proba(z[ev])
    out = {"temperature": float(ts.temperature_)}
    for name, p in (("before", before), ("after", after)):
        ci = bootstrap_ci(pairwise_calibration_error, p, y[ev], n_resamples=500, seed=seed)
        out[name] = {"ece": float(ci.estimate), "low": float(ci.low), "high": float(ci.high)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", default="200,800,all")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--workdir", default="auq-validity")
    ap.add_argument("--cache", default=None, help="feature cache folder (default: WORKDIR/feature-cache)")
    ap.add_argument("--output", default=None, help="JSON results (default: WORKDIR/uncertainty_validity.json)")
    ap.add_argument("--quick", action="store_true", help="1 seed, sizes 200,all, heads and laplace only")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.sizes, args.kinds = 1, "200,all", "heads,laplace"
    args.cache = args.cache or os.path.join(args.workdir, "feature-cache")
    args.output = args.output or os.path.join(args.workdir, "uncertainty_validity.json")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    start = time.perf_counter()
    backbone = default_backbone()
    hh, mt = load_hh_rlhf(), load_mt_bench()
    mt_dis, mt_multi = disagreement(mt)
    synth_in = make_synthetic_preferences(300, seed=11).dataset
    synth_out = make_synthetic_preferences(300, seed=12, shift=3.0).dataset
    synth_train = make_synthetic_preferences(600, seed=10).dataset
    kinds = args.kinds.split(",")
    results: dict[str, dict] = {k: {"ood": [], "synthetic_ood": [], "trend": {}, "selective": [], "spearman": [], "calibration": []} for k in kinds}
    for seed in range(args.seeds):
        train_all, test = hh.train_test_split(test_size=0.25, seed=seed)
        sizes = [len(train_all) if s == "all" else int(s) for s in args.sizes.split(",")]
        for kind in kinds:
            for n in sizes:
                model = train(kind, backbone, train_all.select(range(n)), seed, args)
                p_test = score(model, test, progress=False, feature_cache=args.cache)
                s_test = signals(p_test)
                results[kind]["trend"].setdefault(str(n), []).append(
                    {"epistemic": float(s_test["epistemic"].mean()), "margin_std": float(s_test["margin_std"].mean()),
                     "accuracy": float(pairwise_correctness(p_test.decompose().prob, p_test.targets).mean())}
                )
                if n != max(sizes):
                    continue
                p_mt = score(model, mt, progress=False, feature_cache=args.cache)
                s_mt = signals(p_mt)
                results[kind]["ood"].append({k: ood_auroc(s_test[k], s_mt[k]) for k in s_test if k in s_mt})
                results[kind]["selective"].append(selective(p_test, s_test, np.random.default_rng(seed)))
                results[kind]["spearman"].append(
                    {k: float(spearmanr(v[mt_multi], mt_dis[mt_multi]).statistic) for k, v in s_mt.items()}
                )
                results[kind]["calibration"].append(calibration(p_test, seed))
                if seed == 0:  # synthetic shift: a model of this kind on synthetic pairs
                    synth = train(kind, backbone, synth_train, seed, args)
                    a = signals(score(synth, synth_in, progress=False, feature_cache=args.cache))
                    b = signals(score(synth, synth_out, progress=False, feature_cache=args.cache))
                    results[kind]["synthetic_ood"].append({k: ood_auroc(a[k], b[k]) for k in a if k in b})
                print(f"[{time.perf_counter() - start:6.0f} s] seed {seed} {kind}: done", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1)
    print(report(results, kinds))
    print(f"\nfinished in {time.perf_counter() - start:.0f} s; results in {args.output}")


def _ms(values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std():.3f}"


def report(results: dict, kinds: list[str]) -> str:
    lines = ["## OOD AUROC: held-out hh-rlhf (in) vs MT-Bench (out); synthetic shift in brackets", ""]
    lines.append("| kind | " + " | ".join(SIGNALS) + " |")
    lines.append("|---" * (len(SIGNALS) + 1) + "|")
    for kind in kinds:
        r = results[kind]
        cells = []
        for s in SIGNALS:
            vals = [x[s] for x in r["ood"] if s in x]
            syn = [x[s] for x in r["synthetic_ood"] if s in x]
            cells.append((_ms(vals) if vals else "–") + (f" [{_ms(syn)}]" if syn else ""))
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", "## Mean epistemic (nats) and margin std on held-out pairs vs training pairs", ""]
    for kind in kinds:
        trend = results[kind]["trend"]
        row = ", ".join(
            f"n={n}: MI {_ms([t['epistemic'] for t in v])}, std {_ms([t['margin_std'] for t in v])}, acc {_ms([t['accuracy'] for t in v])}"
            for n, v in sorted(trend.items(), key=lambda kv: int(kv[0]))
        )
        lines.append(f"- {kind}: {row}")
    lines += ["", "## Accuracy when answering the least uncertain 50% / 80% (random abstention beside it)", ""]
    lines.append("| kind | coverage | random | " + " | ".join(SIGNALS) + " |")
    lines.append("|---" * (len(SIGNALS) + 3) + "|")
    for kind in kinds:
        sel = results[kind]["selective"]
        for c in COVERAGES:
            key = f"acc@{c:.0%}"
            rnd = f"{np.mean([s[f'random@{c:.0%}']['mean'] for s in sel]):.3f} ± {np.mean([s[f'random@{c:.0%}']['std'] for s in sel]):.3f}"
            cells = [_ms([s[name][key] for s in sel]) if name in sel[0] else "–" for name in SIGNALS]
            lines.append(f"| {kind} | {c:.0%} | {rnd} | " + " | ".join(cells) + " |")
    lines += ["", "## Spearman with annotator disagreement (MT-Bench pairs with >= 2 votes)", ""]
    lines.append("| kind | " + " | ".join(SIGNALS) + " |")
    lines.append("|---" * (len(SIGNALS) + 1) + "|")
    for kind in kinds:
        sp = results[kind]["spearman"]
        lines.append(f"| {kind} | " + " | ".join(_ms([x[s] for x in sp]) if s in sp[0] else "–" for s in SIGNALS) + " |")
    lines += ["", "## Pairwise ECE on held-out pairs, before / after temperature scaling (95% bootstrap CI, seed 0)", ""]
    for kind in kinds:
        c = results[kind]["calibration"][0]
        b, a = c["before"], c["after"]
        lines.append(
            f"- {kind}: {b['ece']:.3f} [{b['low']:.3f}, {b['high']:.3f}] -> {a['ece']:.3f} [{a['low']:.3f}, {a['high']:.3f}] (T = {c['temperature']:.2f})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

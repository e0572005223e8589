"""The validity claims through the command line alone: ``auq train`` then ``auq score``.

A user with JSONL files and the shell: the bundled hh-rlhf pairs are written out as a training
file (400 pairs, and all 1,300 training pairs of a 75/25 split) and a held-out file, the bundled
MT-Bench pairs as an out-of-domain file. For ``--kind heads`` and ``--kind laplace`` with every
other option at its default (``--max-length 128`` to keep the CPU run short), it runs
``auq train`` and ``auq score`` and reads the CSVs back:

* the OOD AUROC of every uncertainty column (held-out hh-rlhf = in, MT-Bench = out);
* mean epistemic on the held-out pairs at 400 vs all training pairs (the claim: it falls by 25% or
  more);
* accuracy at 50% coverage when abstaining on the documented abstention signal (``total``) vs
  random abstention (mean ± std over 2,000 random draws).

Each figure is given per split seed (``--seeds``, default 0,1,2) and summarised over them: one
split's held-out set has 434 pairs, so random abstention's own spread (±0.024 at 50% coverage) is
as large as the gain a weak reward model can show, and a single seed decides little.

``python benchmarks/cli_validity.py`` (about 10 minutes on 2 cores; the trunk features of every
text are computed once and shared through ``--feature-cache``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from auq.calibration import ood_auroc, pairwise_correctness
from auq.data import load_hh_rlhf, load_mt_bench
from auq.demo import default_backbone

COLUMNS = ("total", "aleatoric", "epistemic", "margin_std", "reward_std", "ood")
ABSTAIN_ON = "total"


def write_jsonl(ds, path: str) -> None:
    df = ds.to_pandas()
    keep = [c for c in ("prompt", "chosen", "rejected", "target") if c in df.columns]
    df[keep].to_json(path, orient="records", lines=True, force_ascii=False)


def auq(*args: str) -> None:
    cmd = [sys.executable, "-m", "auq", *args, "--no-progress"]
    print("$ auq " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def columns(path: str) -> dict[str, np.ndarray]:
    df = pd.read_csv(path)
    out = {c: df[c].to_numpy(np.float64) for c in COLUMNS if c in df.columns}
    out["reward_std"] = np.maximum(df["reward_std_chosen"], df["reward_std_rejected"]).to_numpy(np.float64)
    out["prob"] = df["prob"].to_numpy(np.float64)
    out["target"] = df["target"].to_numpy(np.float64)
    return out


def run_seed(seed: int, kinds: list[str], root: str, cache: str, backbone: str) -> dict[str, dict]:
    """``auq train`` + ``auq score`` for every kind on one split; the figures of each kind."""
    wd = os.path.join(root, f"seed-{seed}")
    os.makedirs(wd, exist_ok=True)
    train, test = load_hh_rlhf().train_test_split(test_size=0.25, seed=seed)
    files = {"400": os.path.join(wd, "train-400.jsonl"), "all": os.path.join(wd, "train-all.jsonl")}
    write_jsonl(train.select(range(400)), files["400"])
    write_jsonl(train, files["all"])
    write_jsonl(test, os.path.join(wd, "test.jsonl"))
    write_jsonl(load_mt_bench(), os.path.join(wd, "mt-bench.jsonl"))
    out = {}
    for kind in kinds:
        scored = {}
        for size, data in files.items():
            model = os.path.join(wd, f"{kind}-{size}")
            auq("train", "--data", data, "--backbone", backbone, "--kind", kind, "--output", model,
                "--max-length", "128", "--feature-cache", cache, "--seed", str(seed))
            for name in ("test", "mt-bench"):
                path = os.path.join(wd, f"{kind}-{size}-{name}.csv")
                auq("score", "--model", model, "--data", os.path.join(wd, f"{name}.jsonl"), "--output", path,
                    "--feature-cache", cache)
                scored[size, name] = columns(path)
        t_all, mt_all = scored["all", "test"], scored["all", "mt-bench"]
        correct = pairwise_correctness(t_all["prob"], t_all["target"])
        k = len(correct) // 2
        keep = np.argsort(t_all[ABSTAIN_ON], kind="stable")[:k]
        rng = np.random.default_rng(seed)
        rand = np.array([correct[rng.choice(len(correct), k, replace=False)].mean() for _ in range(2000)])
        out[kind] = {
            "auroc": {c: ood_auroc(t_all[c], mt_all[c]) for c in COLUMNS if c in t_all and c in mt_all},
            "epistemic": (scored["400", "test"]["epistemic"].mean(), t_all["epistemic"].mean()),
            "n_train": len(train),
            "accuracy": correct.mean(),
            "abstain": correct[keep].mean(),
            "random": (rand.mean(), rand.std()),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="auq-cli-validity")
    ap.add_argument("--kinds", default="heads,laplace")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds (default: 0,1,2)")
    args = ap.parse_args()
    start = time.perf_counter()
    root = os.path.abspath(args.workdir)
    kinds, seeds = args.kinds.split(","), [int(s) for s in args.seeds.split(",")]
    # one cache for every seed: the texts are the same, only the split changes
    backbone, cache = default_backbone(), os.path.join(root, "feature-cache")
    results = {seed: run_seed(seed, kinds, root, cache, backbone) for seed in seeds}
    lines = []
    for kind in kinds:
        lines.append(f"### --kind {kind}")
        for seed in seeds:
            r = results[seed][kind]
            (e400, eall), (rmean, rstd) = r["epistemic"], r["random"]
            lines.append(
                f"seed {seed}: OOD AUROC " + ", ".join(f"{c} {v:.3f}" for c, v in r["auroc"].items())
                + f"\n  mean epistemic on held-out pairs {e400:.3g} (400 pairs) -> {eall:.3g} (all {r['n_train']}), "
                f"change {100 * (eall / e400 - 1):+.0f}%"
                + f"\n  accuracy at 50% coverage abstaining on {ABSTAIN_ON}: {r['abstain']:.3f} vs random "
                f"{rmean:.3f} ± {rstd:.3f} (gain {(r['abstain'] - rmean) / rstd:.1f} spreads; all pairs {r['accuracy']:.3f})"
            )
        gains = np.array([(results[s][kind]["abstain"] - results[s][kind]["random"][0]) for s in seeds])
        spread = np.mean([results[s][kind]["random"][1] for s in seeds])
        changes = [100 * (results[s][kind]["epistemic"][1] / results[s][kind]["epistemic"][0] - 1) for s in seeds]
        best = {c: np.mean([results[s][kind]["auroc"][c] for s in seeds]) for c in results[seeds[0]][kind]["auroc"]}
        lines.append(
            f"over {len(seeds)} seeds: best OOD column {max(best, key=best.get)} {max(best.values()):.3f}; "
            f"epistemic change {min(changes):+.0f}% to {max(changes):+.0f}%; abstention gain "
            f"{gains.mean():.3f} (per seed {', '.join(f'{g:.3f}' for g in gains)}) vs random spread {spread:.3f}"
        )
    print("\n" + "\n".join(lines))
    print(f"\nfinished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

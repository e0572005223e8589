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

``python benchmarks/cli_validity.py`` (about 6 minutes on 2 cores; the trunk features of every
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="auq-cli-validity")
    ap.add_argument("--kinds", default="heads,laplace")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.perf_counter()
    wd = os.path.abspath(args.workdir)
    os.makedirs(wd, exist_ok=True)
    train, test = load_hh_rlhf().train_test_split(test_size=0.25, seed=args.seed)
    files = {"400": os.path.join(wd, "train-400.jsonl"), "all": os.path.join(wd, "train-all.jsonl")}
    write_jsonl(train.select(range(400)), files["400"])
    write_jsonl(train, files["all"])
    write_jsonl(test, os.path.join(wd, "test.jsonl"))
    write_jsonl(load_mt_bench(), os.path.join(wd, "mt-bench.jsonl"))
    backbone, cache = default_backbone(), os.path.join(wd, "feature-cache")
    lines = []
    for kind in args.kinds.split(","):
        scored = {}
        for size, data in files.items():
            model = os.path.join(wd, f"{kind}-{size}")
            auq("train", "--data", data, "--backbone", backbone, "--kind", kind, "--output", model,
                "--max-length", "128", "--feature-cache", cache, "--seed", str(args.seed))
            for name in ("test", "mt-bench"):
                out = os.path.join(wd, f"{kind}-{size}-{name}.csv")
                auq("score", "--model", model, "--data", os.path.join(wd, f"{name}.jsonl"), "--output", out,
                    "--feature-cache", cache)
                scored[size, name] = columns(out)
        t_all, mt_all = scored["all", "test"], scored["all", "mt-bench"]
        aurocs = {c: ood_auroc(t_all[c], mt_all[c]) for c in COLUMNS if c in t_all and c in mt_all}
        e400, eall = scored["400", "test"]["epistemic"].mean(), t_all["epistemic"].mean()
        correct = pairwise_correctness(t_all["prob"], t_all["target"])
        k = len(correct) // 2
        keep = np.argsort(t_all[ABSTAIN_ON], kind="stable")[:k]
        rng = np.random.default_rng(args.seed)
        rand = np.array([correct[rng.choice(len(correct), k, replace=False)].mean() for _ in range(2000)])
        lines.append(f"### --kind {kind}")
        lines.append("OOD AUROC (hh-rlhf test vs MT-Bench): " + ", ".join(f"{c} {v:.3f}" for c, v in aurocs.items()))
        lines.append(f"mean epistemic on held-out pairs: {e400:.3g} (400 pairs) -> {eall:.3g} (all {len(train)}), change {100 * (eall / e400 - 1):+.0f}%")
        lines.append(
            f"accuracy at 50% coverage abstaining on {ABSTAIN_ON}: {correct[keep].mean():.3f} vs random "
            f"{rand.mean():.3f} ± {rand.std():.3f} (all pairs {correct.mean():.3f})"
        )
    print("\n" + "\n".join(lines))
    print(f"\nfinished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Benchmark: one trunk pass per text (``auq.models.FeatureCache``).

(a) ``score(model, pairs, feature_cache=...)`` on pairs whose features are all in the store, against
    reading those features from the store alone (``FeatureCache.features``): the cost of scoring
    on top of the read. Target: <= 1.2x.
(b) Trunk passes when a K=16 heads ensemble is trained after a K=8 one on the same trunk and data,
    and when a subset of the data and a new seed are trained: 0 each (counted, not timed).
(c) For scale: scoring the same pairs with the trunk (no cache).

Real MiniLM (``auq.demo.default_backbone()``), the first ``--pairs`` bundled hh-rlhf pairs, 128
tokens. Medians of ``--repeats`` round-robin runs, ratios against the baseline of the same run.

Measured (2 shared CPU cores, 400 pairs): reading the store 0.205 s, score() from it 0.232 s
(1.13x; both hash the trunk's weights for the key, about 0.15 s), score() with the trunk 14 s;
trunk passes 800 for the first run, 0 for K=16 on the same data, 0 for a new seed on half of it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from auq.data import load_hh_rlhf
from auq.demo import default_backbone
from auq.models import FeatureCache, RewardEnsemble, score
from auq.training import HEADS_RECIPE, RewardModelTrainer, RewardTrainerConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    backbone = default_backbone()
    data = load_hh_rlhf(n=args.pairs)
    tmp = tempfile.mkdtemp(prefix="auq-fc-")
    cache_dir = os.path.join(tmp, "cache")

    def train(n_members: int, seed: int, ds) -> RewardModelTrainer:
        model = RewardEnsemble.from_backbone(backbone, kind="heads", n_members=n_members, seed=seed)
        cfg = RewardTrainerConfig(
            output_dir=os.path.join(tmp, f"k{n_members}-s{seed}"), max_length=128, seed=seed,
            feature_cache_dir=cache_dir, disable_tqdm=True, logging_steps=10_000,
            **dict(HEADS_RECIPE, num_train_epochs=2.0),
        )
        trainer = RewardModelTrainer(model, cfg, ds)
        trainer.train()
        return trainer

    start = time.perf_counter()
    first = train(8, 0, data)
    t_first = time.perf_counter() - start
    passes = {
        "K=8, seed 0 (fills the store)": first.feature_store.n_encoded,
        "K=16, seed 0, same data": train(16, 0, data).feature_store.n_encoded,
        "K=8, seed 1, first half of the data": train(8, 1, data.select(range(args.pairs // 2))).feature_store.n_encoded,
    }
    model = first.model
    cache = FeatureCache(cache_dir)
    times: dict[str, list[float]] = {"read the store": [], "score() from the store": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        FeatureCache(cache_dir).features(model, data, progress=False)
        times["read the store"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        preds = score(model, data, progress=False, feature_cache=FeatureCache(cache_dir), device="cpu")
        times["score() from the store"].append(time.perf_counter() - t0)
    assert preds.ood is not None and cache.n_encoded == 0
    t0 = time.perf_counter()
    score(model, data, progress=False, device="cpu")
    t_trunk = time.perf_counter() - t0
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["read the store"]
    print(f"pairs={args.pairs} repeats={args.repeats} threads={torch.get_num_threads()}")
    print(f"{'configuration':<40}{'median s':>10}{'ratio':>8}")
    for k, v in med.items():
        print(f"{k:<40}{v:>10.4f}{v / base:>8.2f}")
    print(f"{'score() with the trunk (one run)':<40}{t_trunk:>10.3f}{t_trunk / base:>8.1f}")
    print(f"first training incl. encoding: {t_first:.1f} s")
    print("texts through the trunk:")
    for k, v in passes.items():
        print(f"  {k:<40}{v:>6}")


if __name__ == "__main__":
    main()

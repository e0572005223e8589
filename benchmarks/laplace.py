"""Benchmark: cost of the Bayesian last layer (LaplaceRewardModel) against heads ensembles.

(a) Fitting on cached features: ``RewardModelTrainer.train()`` of a ``LaplaceRewardModel`` (closed
    form: MAP by Newton, the unit-margin prior, posterior draws; then, like every model,
    the feature density and training offsets) vs training a ``heads`` ensemble K=8 with the default
    recipe (``HEADS_RECIPE``: 30 epochs, batch 32, anchored, bootstrap), both on the same cached
    pooled MiniLM features of the bundled hh-rlhf pairs (the shared feature store is filled
    beforehand, so neither run encodes text). Target: Laplace <= 2x heads.
(b) Scoring: ``score()`` of 16 real pairs (128 tokens) by one plain ``RewardModel`` vs by the
    ``LaplaceRewardModel`` (K=32 draws) with its feature density and offsets (ood columns,
    anchoring). Target: <= 1.1x.

Configurations are measured round-robin and the medians printed with their ratio. Encoding the
hh-rlhf pairs with MiniLM on a CPU takes minutes; ``--features`` reads precomputed features
instead (an ``.npz`` with ``hh_c`` and ``hh_r``, ``[n_pairs, 384]`` in ``load_hh_rlhf()`` order),
and ``--pairs`` uses the first N pairs only.

Measured (2 shared CPU cores, one thread, process clock, all 1,734 pairs, precomputed features):
fit heads K=8 10.8 s, Laplace 6.9 s (0.64x); score() one model 1.067 s, Laplace K=32 with the
density 1.032 s (0.97x).

Usage::

    python benchmarks/laplace.py --threads 1 --clock process
    python benchmarks/laplace.py --features feats.npz --threads 1 --clock process
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from auq.data import load_hh_rlhf  # noqa: E402  (after the path fix above)
from auq.demo import default_backbone  # noqa: E402
from auq.models import LaplaceRewardModel, RewardEnsemble, RewardModel, score  # noqa: E402
from auq.models._backbone import load_backbone, load_tokenizer  # noqa: E402
from auq.training import HEADS_RECIPE, RewardModelTrainer, RewardTrainerConfig  # noqa: E402


def _fill_cache(trainer: RewardModelTrainer, dataset, fc: torch.Tensor | None, fr: torch.Tensor | None) -> None:
    """Put the features in the trainer's feature store (shared by every model on the trunk):
    the given ones, or computed by the trunk when none are given (not timed)."""
    store, key = trainer.feature_store, trainer.feature_cache_key()
    if fc is None:
        store.features(trainer.model, dataset, collator=trainer.collator, progress=False,
                       precision=str(trainer.accelerator.mixed_precision))
        return
    from auq.models._features import text_key

    new = {}
    for i in range(len(dataset)):
        ex = dataset[i]
        new[text_key(ex["prompt"], ex["chosen"])] = fc[i].numpy().astype(np.float32)
        new[text_key(ex["prompt"], ex["rejected"])] = fr[i].numpy().astype(np.float32)
    store._store(key, new)  # the benchmark's precomputed features, written as the store writes them


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", default=None, help=".npz with hh_c, hh_r (default: encode with MiniLM)")
    parser.add_argument("--pairs", type=int, default=None, help="use the first N hh-rlhf pairs (default: all)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each fit")
    parser.add_argument("--score-repeats", type=int, default=7, help="repeats of each scoring forward")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--clock", choices=("wall", "process"), default="wall",
        help="wall: elapsed time; process: this process's CPU time (steadier on a shared CPU)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    logging.basicConfig(level=logging.WARNING)
    path = default_backbone()
    backbone, tok = load_backbone(path), load_tokenizer(path)
    data = load_hh_rlhf()
    if args.pairs:
        data = data.select(range(args.pairs))
    n = len(data)

    fc = fr = None
    if args.features:
        z = np.load(args.features)
        fc, fr = torch.from_numpy(z["hh_c"][:n]), torch.from_numpy(z["hh_r"][:n])
    tmp = tempfile.mkdtemp(prefix="auq-bench-laplace-")
    filled = False

    def fit(kind: str, rep: int) -> float:
        if kind == "laplace":
            model = LaplaceRewardModel(backbone, tok, n_samples=32)
            cfg = RewardTrainerConfig(output_dir=os.path.join(tmp, f"l{rep}"), max_length=args.max_length,
                                      disable_tqdm=True, feature_cache_dir=os.path.join(tmp, "cache"))
        else:
            model = RewardEnsemble(backbone, tok, kind="heads", n_members=8, seed=rep)
            cfg = RewardTrainerConfig(
                output_dir=os.path.join(tmp, f"h{rep}"), max_length=args.max_length, disable_tqdm=True,
                seed=rep, feature_cache_dir=os.path.join(tmp, "cache"), **HEADS_RECIPE,
            )  # fmt: skip
        trainer = RewardModelTrainer(model, cfg, data)
        nonlocal filled
        if not filled:
            _fill_cache(trainer, data, fc, fr)
            filled = True
        start = clock()
        trainer.train()
        return clock() - start

    fits: dict[str, list[float]] = {"heads K=8": [], "laplace": []}
    for rep in range(args.repeats):
        for kind in fits:
            fits[kind].append(fit("laplace" if kind == "laplace" else "heads", rep))
    fit_med = {k: statistics.median(v) for k, v in fits.items()}

    # (b) scoring: score() of 16 real pairs (128 tokens) by one plain model vs by the Laplace model
    # with its feature density and offsets (ood columns, anchoring): the whole user-facing path
    pairs16 = data.select(range(16))
    single = RewardModel(backbone, tok, train_trunk=False).eval()
    single.config.max_length = args.max_length
    lap = LaplaceRewardModel(backbone, tok, n_samples=32).eval()
    lap.config.max_length = args.max_length  # the trainers' collator length: the same store key
    if fc is None:  # read back from the store
        from auq.models import FeatureCache

        a, b = FeatureCache(os.path.join(tmp, "cache")).features(lap, data.select(range(min(n, 256))), progress=False)
        fc, fr = torch.from_numpy(a), torch.from_numpy(b)
    lap.fit_features(fc[:256], fr[:256])
    with torch.no_grad():
        rc, rr = lap.forward_features(fc[:256].float()), lap.forward_features(fr[:256].float())
    lap.fit_uncertainty_from_features(fc[:256], fr[:256], rc.double().numpy(), rr.double().numpy())
    models = {"one model": single, "laplace K=32": lap}
    for m in models.values():
        score(m, pairs16, progress=False, device="cpu")
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.score_repeats):
        for name, m in models.items():
            start = clock()
            preds = score(m, pairs16, progress=False, device="cpu")
            times[name].append(clock() - start)
            assert name == "one model" or preds.ood is not None
    score_med = {k: statistics.median(v) for k, v in times.items()}

    print(f"threads={torch.get_num_threads()} clock={args.clock} pairs={n} hidden={fc.shape[1]} "
          f"fit repeats={args.repeats} score repeats={args.score_repeats}")
    print(f"{'configuration':<34}{'median s':>10}{'ratio':>8}{'target':>9}  ok")
    r_fit = fit_med["laplace"] / fit_med["heads K=8"]
    print(f"{'fit heads K=8 (default, cached)':<34}{fit_med['heads K=8']:>10.3f}{1.0:>8.2f}")
    print(f"{'fit laplace (closed form, cached)':<34}{fit_med['laplace']:>10.3f}{r_fit:>8.2f}{'<=2.00':>9}  {'yes' if r_fit <= 2 else 'NO'}")
    r_score = score_med["laplace K=32"] / score_med["one model"]
    print(f"{'score() one model, 16 pairs':<34}{score_med['one model']:>10.4f}{1.0:>8.2f}")
    print(f"{'score() laplace K=32 + density':<34}{score_med['laplace K=32']:>10.4f}{r_score:>8.2f}{'<=1.10':>9}  {'yes' if r_score <= 1.1 else 'NO'}")
    return {"fit laplace / heads": r_fit, "score laplace / one model": r_score}


if __name__ == "__main__":
    main()

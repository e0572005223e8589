"""Step overhead of weighted / soft-target DPO versus plain DPO.

One training step = policy forward on chosen+rejected, reference forward (no grad), loss,
backward, AdamW step. The two variants run interleaved in the same process on the same batch;
we report the median step time of each and the ratio weighted/plain (target <= 1.02).

    python benchmarks/dpo_step.py [--repeats 60] [--batch 8] [--length 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from auq.training.dpo_trainer import sequence_logps
from auq.training.losses import dpo_loss, uncertainty_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="preference pairs per step")
    ap.add_argument("--length", type=int, default=64, help="tokens per sequence")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = stable timings)")
    ap.add_argument("--aa", action="store_true", help="control: both arms run plain DPO (noise floor)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)

    cfg = GPT2Config(vocab_size=512, n_positions=args.length, n_embd=args.hidden, n_layer=args.layers, n_head=2, bos_token_id=0, eos_token_id=0)
    policy = GPT2LMHeadModel(cfg).to(dev)
    ref = GPT2LMHeadModel(cfg).to(dev).eval()
    ref.load_state_dict(policy.state_dict())
    for p in ref.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)

    b, n = args.batch, args.length
    ids = torch.randint(0, cfg.vocab_size, (2 * b, n), device=dev)
    attn = torch.ones_like(ids)
    resp = torch.zeros_like(ids)
    resp[:, n // 2 :] = 1  # second half of each sequence is the response
    u = torch.rand(b, device=dev)
    weights = uncertainty_weights(u, "exp", temperature=0.5)
    targets = 1.0 - 0.3 * u

    def step(weighted: bool) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logps, _ = sequence_logps(policy, ids, attn, resp)
        with torch.no_grad():
            ref_logps, _ = sequence_logps(ref, ids, attn, resp)
        pc, pr, rc, rr = logps[:b], logps[b:], ref_logps[:b], ref_logps[b:]
        if weighted and not args.aa:
            loss = dpo_loss(pc, pr, rc, rr, beta=0.1, weights=weights, targets=targets)
        else:
            loss = dpo_loss(pc, pr, rc, rr, beta=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        step(False)
        step(True)
    plain, weighted = [], []
    for i in range(args.repeats):
        # alternate the order so drift (other load, clocks) hits both variants alike
        if i % 2 == 0:
            plain.append(step(False))
            weighted.append(step(True))
        else:
            weighted.append(step(True))
            plain.append(step(False))
    mp, mw = statistics.median(plain), statistics.median(weighted)

    # the loss alone (forward + backward on [B] log-probs), to show where any difference comes from
    lp = torch.randn(4, b, device=dev, dtype=torch.float32)

    def loss_only(weighted: bool) -> float:
        xs = [x.clone().requires_grad_(True) for x in lp]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if weighted:
            loss = dpo_loss(*xs, beta=0.1, weights=weights, targets=targets)
        else:
            loss = dpo_loss(*xs, beta=0.1)
        loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    lo_p = statistics.median(loss_only(False) for _ in range(200))
    lo_w = statistics.median(loss_only(True) for _ in range(200))
    print(f"{'A/A CONTROL (both arms plain) ' if args.aa else ''}device={dev} threads={args.threads} pairs={b} length={n} hidden={args.hidden} layers={args.layers}")
    print(f"plain DPO step    median {mp * 1e3:8.2f} ms over {args.repeats}")
    print(f"weighted DPO step median {mw * 1e3:8.2f} ms over {args.repeats}")
    print(f"ratio weighted/plain = {mw / mp:.3f} (target <= 1.02)")
    print(
        f"loss only (fwd+bwd): plain {lo_p * 1e6:.0f} us, weighted {lo_w * 1e6:.0f} us; "
        f"extra {(lo_w - lo_p) * 1e6:.0f} us = {(lo_w - lo_p) / mp * 100:.3f}% of a plain step"
    )


if __name__ == "__main__":
    main()

"""DPO on preference pairs whose labels are flipped where a reward ensemble is uncertain.

Question: when a known fraction of preference labels is wrong, and the wrong ones sit mostly
where a reward ensemble is uncertain, does putting the ensemble's uncertainty into DPO (per-pair
weights, soft targets, per-pair robust-DPO flip rates) give a policy whose implicit reward ranks
held-out pairs better than plain DPO?

Setup (all synthetic, all offline, CPU):

* Data: :class:`auq.data.SyntheticPreferenceGenerator` texts (``dim`` words per response, one
  word per feature bin) with a known additive reward. Pairs are oriented by the true reward (so
  without injected noise every label is right).
* Reward ensemble: ``K`` bootstrap linear Bradley-Terry models on bag-of-words features, trained
  with :func:`auq.training.losses.bradley_terry_loss` (``[B, K]`` bootstrap-count weights) on a
  separate set of pairs labelled by Bradley-Terry sampling. Its per-pair uncertainty is
  :func:`auq.estimators.decompose` (total predictive entropy) and its preference probability
  ``prob``.
* Noise: ``--flip-rate`` (default 0.3) of the DPO training labels are flipped, *preferentially
  where the ensemble is uncertain*: pair ``i`` with uncertainty rank ``r_i`` (0 = most certain) is
  flipped with probability ``2·rate·r_i/(n-1)`` (most uncertain pair: ``2·rate``; most certain: 0).
* Policy / reference: a tiny GPT-2 (hidden 32, 2 layers) from a config, with a word-level
  tokenizer. The reference is first SFT-trained briefly on unlabelled responses so its log-probs
  are meaningful; the policy starts as a copy of it. Reference log-probs are precomputed.
* Methods (each a compact loop over :mod:`auq.training.losses`; same data order, same steps):
  ``plain`` DPO; ``weighted`` (``uncertainty_weights(total_entropy, "exp")``, mean by ``Σw``);
  ``soft_target`` (``targets`` = the ensemble's probability that the recorded chosen wins);
  ``robust`` (rDPO, global ``ε`` = the true flip rate); ``robust_per_pair`` (``ε_i`` =
  ``flip_rate_from_uncertainty(total_entropy, input="entropy", max_rate=0.4)``, a label-agnostic
  flip prior as rDPO assumes); and ``clean`` (plain DPO on the same pairs
  without flips: the ceiling).
* Metric: held-out *clean* preference accuracy of the implicit reward
  ``β·(log π − log π_ref)`` (chosen vs rejected, pairs oriented by the true reward), mean ± std
  over seeds. Also reported: the ensemble's own accuracy on the same test pairs.

Usage::

    python benchmarks/noisy_preferences.py               # ~3-5 min on 2 CPU cores
    python benchmarks/noisy_preferences.py --quick       # ~1 min
    python benchmarks/noisy_preferences.py --output results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auq.data import SyntheticPreferenceGenerator  # noqa: E402
from auq.estimators import decompose  # noqa: E402
from auq.training.losses import (  # noqa: E402
    bradley_terry_loss,
    dpo_loss,
    flip_rate_from_uncertainty,
    robust_dpo_loss,
    uncertainty_weights,
)

logger = logging.getLogger("noisy_preferences")

METHODS = ("clean", "plain", "weighted", "soft_target", "robust", "robust_per_pair")


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def oriented_pairs(gen: SyntheticPreferenceGenerator, n: int, seed: int, by_truth: bool):
    """(chosen texts, rejected texts); oriented by the true reward or by the BT-sampled label."""
    d = gen.sample(n, seed=seed)
    chosen, rejected = list(d.dataset.chosen), list(d.dataset.rejected)
    if by_truth:
        swap = d.rewards_chosen < d.rewards_rejected
        chosen, rejected = (
            [r if s else c for c, r, s in zip(chosen, rejected, swap)],
            [c if s else r for c, r, s in zip(chosen, rejected, swap)],
        )
        keep = d.rewards_chosen != d.rewards_rejected  # ties have no clean label
        chosen = [t for t, k in zip(chosen, keep) if k]
        rejected = [t for t, k in zip(rejected, keep) if k]
    return chosen, rejected


def bag_of_words(gen: SyntheticPreferenceGenerator, texts: list[str]) -> np.ndarray:
    index = {gen.vocabulary[j, q]: j * gen.n_levels + q for j in range(gen.dim) for q in range(gen.n_levels)}
    x = np.zeros((len(texts), gen.dim * gen.n_levels))
    for i, t in enumerate(texts):
        for w in t.split():
            x[i, index[w]] += 1.0
    return x


# ------------------------------------------------------------------------------------------
# reward ensemble: bootstrap linear Bradley-Terry
# ------------------------------------------------------------------------------------------


def train_ensemble(xc: np.ndarray, xr: np.ndarray, k: int, seed: int, steps: int = 300, l2: float = 1e-2):
    g = torch.Generator().manual_seed(seed)
    n, d = xc.shape
    counts = torch.stack([torch.bincount(torch.randint(0, n, (n,), generator=g), minlength=n) for _ in range(k)], 1)
    w = (0.01 * torch.randn(d, k, generator=g, dtype=torch.float64)).requires_grad_(True)
    tc, tr = torch.from_numpy(xc), torch.from_numpy(xr)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = bradley_terry_loss(tc @ w, tr @ w, weights=counts.double()) + l2 * (w**2).sum(0).mean()
        loss.backward()
        opt.step()
    return w.detach().numpy()


# ------------------------------------------------------------------------------------------
# tiny causal LM
# ------------------------------------------------------------------------------------------


def build_lm(gen: SyntheticPreferenceGenerator, seed: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
    for w in gen.vocabulary.ravel():
        vocab.setdefault(str(w), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=gen.dim + 4, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(cfg), fast


def encode(tok, texts: list[str]) -> torch.Tensor:
    """``<bos> words <eos>``; every response has the same number of words, so no padding."""
    ids = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id] for t in texts]
    return torch.tensor(ids, dtype=torch.long)


def seq_logps(model, ids: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of every token after ``<bos>`` (the response and its eos)."""
    logits = model(input_ids=ids).logits[:, :-1]
    return torch.gather(F.log_softmax(logits.float(), -1), 2, ids[:, 1:, None])[..., 0].sum(1)


@torch.no_grad()
def batched_logps(model, ids: torch.Tensor, bs: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([seq_logps(model, ids[i : i + bs]) for i in range(0, len(ids), bs)])


def sft(model, ids: torch.Tensor, steps: int, bs: int, lr: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = ids[torch.randint(0, len(ids), (bs,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_dpo(ref, ids_c, ids_r, ref_c, ref_r, method: str, extras: dict, *, beta: float, epochs: int,
              bs: int, lr: float, seed: int):
    policy = copy.deepcopy(ref)
    policy.requires_grad_(True)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    n = len(ids_c)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, bs):
            i = perm[s : s + bs]
            lp = seq_logps(policy, torch.cat([ids_c[i], ids_r[i]]))
            pc, pr = lp[: len(i)], lp[len(i) :]
            if method in ("plain", "clean"):
                loss = dpo_loss(pc, pr, ref_c[i], ref_r[i], beta=beta)
            elif method == "weighted":
                loss = dpo_loss(pc, pr, ref_c[i], ref_r[i], beta=beta, weights=extras["weights"][i])
            elif method == "soft_target":
                loss = dpo_loss(pc, pr, ref_c[i], ref_r[i], beta=beta, targets=extras["targets"][i])
            elif method == "robust":
                loss = robust_dpo_loss(pc, pr, ref_c[i], ref_r[i], beta=beta, epsilon=extras["epsilon"])
            elif method == "robust_per_pair":
                loss = robust_dpo_loss(pc, pr, ref_c[i], ref_r[i], beta=beta, epsilon=extras["eps_pair"][i])
            else:
                raise ValueError(method)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return policy


def implicit_accuracy(policy, ids_c, ids_r, ref_c, ref_r, beta: float) -> float:
    zc = beta * (batched_logps(policy, ids_c) - ref_c)
    zr = beta * (batched_logps(policy, ids_r) - ref_r)
    return float(((zc > zr).double() + 0.5 * (zc == zr).double()).mean())


# ------------------------------------------------------------------------------------------
# one seed
# ------------------------------------------------------------------------------------------


def run_seed(seed: int, a: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    gen = SyntheticPreferenceGenerator(a.dim, n_levels=a.n_levels, beta=a.label_beta, reward_seed=seed)
    s = 1000 * seed
    # ensemble data: BT-sampled labels (realistically noisy), separate from the DPO pairs
    ec, er = oriented_pairs(gen, a.n_ensemble, s + 1, by_truth=False)
    W = train_ensemble(bag_of_words(gen, ec), bag_of_words(gen, er), a.members, seed)
    # DPO training pairs (clean orientation) and clean test pairs
    tc, tr_ = oriented_pairs(gen, a.n_train, s + 2, by_truth=True)
    xc, xr = oriented_pairs(gen, a.n_test, s + 3, by_truth=True)
    m_train = (bag_of_words(gen, tc) - bag_of_words(gen, tr_)) @ W  # [n, K] member margins
    dec = decompose(m_train)
    u = np.asarray(dec.total)
    n = len(tc)
    rank = np.empty(n)
    rank[np.argsort(u, kind="stable")] = np.arange(n)
    rng = np.random.default_rng(s + 4)
    flip = rng.random(n) < np.clip(2 * a.flip_rate * rank / max(n - 1, 1), 0, 1)
    nc = [r if f else c for c, r, f in zip(tc, tr_, flip)]
    nr = [c if f else r for c, r, f in zip(tc, tr_, flip)]
    prob_noisy = np.where(flip, 1.0 - np.asarray(dec.prob), np.asarray(dec.prob))  # P(recorded chosen wins)
    m_test = (bag_of_words(gen, xc) - bag_of_words(gen, xr)) @ W
    ens_test_acc = float((np.asarray(decompose(m_test).prob) > 0.5).mean())
    # flips really concentrate where the ensemble is uncertain
    top = u >= np.median(u)
    flip_stats = {
        "flip_rate": float(flip.mean()),
        "flip_rate_uncertain_half": float(flip[top].mean()),
        "flip_rate_certain_half": float(flip[~top].mean()),
        "ensemble_test_accuracy": ens_test_acc,
        "ensemble_auroc_flip_vs_total_entropy": _auroc(u, flip),
    }

    # reference: SFT on unlabelled responses
    ref, tok = build_lm(gen, seed)
    unl = gen.encode(np.random.default_rng(s + 5).standard_normal((a.n_sft, gen.dim)))
    sft(ref, encode(tok, unl), a.sft_steps, 64, 3e-3, seed)
    ref.eval()
    ref.requires_grad_(False)
    logger.info("seed %d: ensemble + SFT reference ready after %.1fs", seed, time.perf_counter() - t0)

    ids = {
        "clean": (encode(tok, tc), encode(tok, tr_)),
        "noisy": (encode(tok, nc), encode(tok, nr)),
        "test": (encode(tok, xc), encode(tok, xr)),
    }
    ref_lp = {k: (batched_logps(ref, c), batched_logps(ref, r)) for k, (c, r) in ids.items()}
    extras = {
        "weights": torch.as_tensor(uncertainty_weights(u, "exp"), dtype=torch.float32),
        "targets": torch.as_tensor(prob_noisy, dtype=torch.float32),
        "epsilon": a.flip_rate,
        # label-agnostic per-pair flip prior (rDPO assumes the flip probability does not depend on
        # the recorded label): the ensemble's total entropy mapped back to a minority probability
        "eps_pair": torch.as_tensor(
            flip_rate_from_uncertainty(u, input="entropy", max_rate=a.max_pair_rate), dtype=torch.float32
        ),
    }
    results = {}
    for method in a.methods:
        key = "clean" if method == "clean" else "noisy"
        (c, r), (rc, rr) = ids[key], ref_lp[key]
        policy = train_dpo(ref, c, r, rc, rr, method, extras, beta=a.beta, epochs=a.epochs, bs=a.batch_size,
                           lr=a.lr, seed=seed)
        results[method] = implicit_accuracy(policy, *ids["test"], *ref_lp["test"], a.beta)
    logger.info("seed %d done in %.1fs: %s", seed, time.perf_counter() - t0,
                {k: round(v, 3) for k, v in results.items()})
    return {"seed": seed, "accuracy": results, **flip_stats, "seconds": time.perf_counter() - t0}


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos = positive.astype(bool)
    if pos.all() or not pos.any():
        return float("nan")
    r = rankdata(score)
    return float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller data and fewer steps (~1 min)")
    p.add_argument("--seeds", type=int, default=None, help="default 5 (3 with --quick)")
    p.add_argument("--flip-rate", type=float, default=0.3)
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    p.add_argument("--output", type=str, default=None, help="write results JSON here")
    p.add_argument("--methods", type=str, default=",".join(METHODS))
    p.add_argument("--max-pair-rate", type=float, default=0.4, help="cap of the per-pair rDPO flip rate")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest for these tiny models, especially on a loaded machine)")
    a = p.parse_args(argv)
    a.methods = [m for m in a.methods.split(",") if m]
    unknown = set(a.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if a.seeds is None:
        a.seeds = 3 if a.quick else 5
    if a.seeds < 1:
        p.error("--seeds must be >= 1")
    a.dim, a.n_levels, a.label_beta, a.members = 8, 8, 2.0, 8
    if a.quick:
        a.n_ensemble, a.n_train, a.n_test, a.n_sft, a.sft_steps, a.epochs = 200, 600, 1000, 2000, 100, 3
    else:
        a.n_ensemble, a.n_train, a.n_test, a.n_sft, a.sft_steps, a.epochs = 200, 1500, 2000, 4000, 200, 4
    a.batch_size, a.lr = 64, 2e-3
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    runs = [run_seed(seed, a) for seed in range(a.seeds)]
    summary = {}
    for m in a.methods:
        acc = np.array([r["accuracy"][m] for r in runs])
        summary[m] = {"mean": float(acc.mean()), "std": _sd(acc), "per_seed": acc.tolist()}
        if "plain" in a.methods:  # paired by seed: same data, flips, reference and data order
            diff = acc - np.array([r["accuracy"]["plain"] for r in runs])
            summary[m]["minus_plain_mean"] = float(diff.mean())
            summary[m]["minus_plain_std"] = _sd(diff)
            summary[m]["seeds_better_than_plain"] = int((diff > 0).sum())
    out = {
        "config": {k: v for k, v in vars(a).items() if k != "output"},
        "summary": summary,
        "runs": runs,
        "seconds": time.perf_counter() - t0,
        "torch": torch.__version__,
    }
    lines = [
        f"Held-out clean preference accuracy of the DPO implicit reward ({a.seeds} seeds, "
        f"{a.flip_rate:.0%} flipped labels concentrated where the ensemble is uncertain)",
        f"{'method':<18}{'accuracy':>16}{'minus plain (paired)':>24}{'seeds > plain':>15}",
    ]
    for m in a.methods:
        row = f"{m:<18}{summary[m]['mean']:>8.3f} ± {summary[m]['std']:.3f}"
        if "minus_plain_mean" in summary[m] and m != "plain":
            row += f"{summary[m]['minus_plain_mean']:>+16.3f} ± {summary[m]['minus_plain_std']:.3f}"
            row += f"{summary[m]['seeds_better_than_plain']:>9d}/{a.seeds}"
        lines.append(row)
    fr = np.mean([r["flip_rate"] for r in runs])
    fu = np.mean([r["flip_rate_uncertain_half"] for r in runs])
    fc = np.mean([r["flip_rate_certain_half"] for r in runs])
    ea = np.mean([r["ensemble_test_accuracy"] for r in runs])
    lines.append(f"flipped: {fr:.3f} overall, {fu:.3f} in the uncertain half, {fc:.3f} in the certain half; "
                 f"ensemble's own test accuracy {ea:.3f}; total {out['seconds']:.0f}s")
    sys.stdout.write("\n".join(lines) + "\n")
    if a.output:
        Path(a.output).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

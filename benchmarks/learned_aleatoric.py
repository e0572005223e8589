"""Does a learned (heteroscedastic) aleatoric uncertainty track annotator disagreement?

Question: the margin-only aleatoric term ``mean_k H(σ(m_k))`` is a function of the margin. Heads
that also learn a noise variance per response (Gaussian Bradley-Terry,
``MemberHeads(heteroscedastic=True)``, ``bradley_terry_loss(noise_var=)``,
``decompose(noise_var=)``) could rank pairs by how inconsistently people judge them. Do they, on
real multi-annotator data?

Setup (real data, frozen MiniLM trunk, CPU):

* Features: pooled all-MiniLM-L6-v2 features (``max_length`` 128, trunk frozen) of the bundled
  hh-rlhf pairs (``load_hh_rlhf``) and MT-Bench pairs (``load_mt_bench``, with annotator votes),
  standardised with the training split's statistics.
* Models: ``K`` linear heads with per-member bootstrap weights, full-batch L-BFGS, L2 penalty
  ``--l2`` on the reward weights and ``--l2-var`` on the variance weights; heteroscedastic heads
  and plain heads trained the same way side by side (the plain ones are the baseline).
* Experiment A: train on 75 % of hh-rlhf (hard labels), score all of MT-Bench.
* Experiment B: train on half of the MT-Bench questions with the vote shares as soft targets,
  score the other questions (``--splits`` random question splits; ids name the question,
  ``auq.data.mt_bench_question``).
* Metrics on pairs with >= 2 votes: Spearman of each score with the label entropy ``H(q)``;
  AUROC for split vs unanimous votes; Spearman with ``H(q)`` among the split-vote pairs. Scores:
  learned aleatoric, learned noise variance (mean over members), margin-only aleatoric.

Usage::

    python benchmarks/learned_aleatoric.py                     # ~3 min on 2 CPU cores (encoding)
    python benchmarks/learned_aleatoric.py --features f.npz    # cache the features there
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from auq.data import load_hh_rlhf, load_mt_bench, mt_bench_question
from auq.estimators import decompose
from auq.models import MemberHeads

logger = logging.getLogger("learned_aleatoric")


def features(path: str | None, max_length: int) -> dict[str, np.ndarray]:
    """Pooled MiniLM features of both datasets (read from / written to ``path`` when given)."""
    if path and os.path.isfile(path):
        with np.load(path) as f:
            return {k: f[k] for k in f}
    from auq.demo import default_backbone
    from auq.models import RewardEnsemble, encode_dataset

    model = RewardEnsemble.from_backbone(default_backbone(), kind="heads", n_members=1)
    model.config.max_length = max_length
    out = {}
    for name, ds in (("hh", load_hh_rlhf()), ("mt", load_mt_bench())):
        out[name + "_c"], out[name + "_r"] = encode_dataset(model, ds, batch_size=64, progress=False)
    if path:
        np.savez(path, **out)
    return out


def fit(xc, xr, q, *, hetero: bool, k: int, l2: float, l2_var: float, seed: int) -> MemberHeads:
    from auq.training.losses import bradley_terry_loss

    n = len(q)
    rng = np.random.default_rng(seed)
    boot = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)], 1).astype(float)
    heads = MemberHeads(xc.shape[1], k, seed=seed, heteroscedastic=hetero).double()
    xc, xr, q, w = (torch.from_numpy(np.ascontiguousarray(a)) for a in (xc, xr, q, boot))
    opt = torch.optim.LBFGS(heads.parameters(), lr=1, max_iter=150, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        if hetero:
            (mc, vc), (mr, vr) = heads.forward_with_variance(xc), heads.forward_with_variance(xr)
            loss = bradley_terry_loss(mc, mr, targets=q, weights=w, noise_var=vc + vr)
            loss = loss + l2_var * (heads.var_weight**2).sum() / k
        else:
            loss = bradley_terry_loss(heads(xc), heads(xr), targets=q, weights=w)
        loss = loss + l2 * (heads.weight**2).sum() / k
        loss.backward()
        return loss

    opt.step(closure)
    return heads


def scores(heads: MemberHeads, xc, xr) -> dict[str, np.ndarray]:
    with torch.no_grad():
        xc, xr = torch.from_numpy(xc), torch.from_numpy(xr)
        if heads.heteroscedastic:
            (mc, vc), (mr, vr) = heads.forward_with_variance(xc), heads.forward_with_variance(xr)
            v = (vc + vr).numpy()
            d = decompose((mc - mr).numpy(), noise_var=v)
            return {"learned_aleatoric": d.aleatoric, "learned_noise_var": v.mean(1), "prob": d.prob}
        d = decompose((heads(xc) - heads(xr)).numpy())
        return {"plain_aleatoric": d.aleatoric, "prob": d.prob}


def entropy(q: np.ndarray) -> np.ndarray:
    q = np.clip(q, 1e-12, 1 - 1e-12)
    return -(q * np.log(q) + (1 - q) * np.log(1 - q))


def metrics(s: dict[str, np.ndarray], q: np.ndarray, n_votes: np.ndarray, idx: np.ndarray) -> dict:
    sel = idx[n_votes[idx] >= 2]
    split = (q[sel] > 0) & (q[sel] < 1)
    out = {"n_multi_vote": int(len(sel)), "n_split": int(split.sum())}
    for name in ("learned_aleatoric", "learned_noise_var", "plain_aleatoric"):
        x = s[name]
        out[name] = {
            "spearman_H": float(spearmanr(x[sel], entropy(q[sel]))[0]),
            "auroc_split": float(roc_auc_score(split, x[sel])),
            "spearman_H_split_only": float(spearmanr(x[sel][split], entropy(q[sel][split]))[0]),
        }
    return out


def run(a: argparse.Namespace) -> dict:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    f = features(a.features, a.max_length)
    mt = load_mt_bench().to_pandas()
    q = mt["target"].to_numpy(float)
    n_votes = (mt["votes_chosen"] + mt["votes_rejected"]).to_numpy(float)
    qnum = np.array(mt_bench_question(mt["id"].tolist()))
    opts = {"k": a.members, "l2": a.l2, "l2_var": a.l2_var}
    results: dict = {"settings": vars(a)}

    def both(xc, xr, t, seed, mu, sd):
        z = lambda x: (x - mu) / sd  # noqa: E731
        h = fit(z(xc), z(xr), t, hetero=True, seed=seed, **opts)
        p = fit(z(xc), z(xr), t, hetero=False, seed=seed, **opts)
        s = scores(h, z(f["mt_c"]), z(f["mt_r"]))
        s["plain_aleatoric"] = scores(p, z(f["mt_c"]), z(f["mt_r"]))["plain_aleatoric"]
        return s

    # A: hh-rlhf (75 %) -> MT-Bench
    n = len(f["hh_c"])
    tr = np.random.default_rng(0).permutation(n)[: int(0.75 * n)]
    xc, xr = f["hh_c"][tr], f["hh_r"][tr]
    mu, sd = xc.mean(0), np.concatenate([xc, xr]).std(0) + 1e-8
    s = both(xc, xr, np.ones(len(tr)), 0, mu, sd)
    results["hh_to_mt_bench"] = metrics(s, q, n_votes, np.arange(len(q)))
    # B: half of the MT-Bench questions (soft vote targets) -> the other half
    qs = np.unique(qnum)
    splits = []
    for rep in range(a.splits):
        train_q = np.random.default_rng(100 + rep).choice(qs, len(qs) // 2, replace=False)
        tri, tei = np.where(np.isin(qnum, train_q))[0], np.where(~np.isin(qnum, train_q))[0]
        xc, xr = f["mt_c"][tri], f["mt_r"][tri]
        mu, sd = xc.mean(0), np.concatenate([xc, xr]).std(0) + 1e-8
        s = both(xc, xr, q[tri], rep, mu, sd)
        splits.append(metrics(s, q, n_votes, tei))
    results["mt_bench_by_question"] = splits
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", default=None, help="npz file to read the features from / write them to")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--l2", type=float, default=1e-2, help="L2 penalty on the reward weights")
    p.add_argument("--l2-var", type=float, default=1e-3, help="L2 penalty on the variance weights")
    p.add_argument("--splits", type=int, default=3, help="random MT-Bench question splits")
    p.add_argument("--output", default=None, help="write results JSON here")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = run(a)

    def show(tag: str, m: dict) -> None:
        logger.info("%s (pairs with >= 2 votes: %d, split: %d)", tag, m["n_multi_vote"], m["n_split"])
        for name in ("learned_aleatoric", "learned_noise_var", "plain_aleatoric"):
            r = m[name]
            logger.info(
                "  %-18s Spearman H(q) %+.3f   AUROC split %.3f   Spearman H(q) among split %+.3f",
                name, r["spearman_H"], r["auroc_split"], r["spearman_H_split_only"],
            )

    show("hh-rlhf -> MT-Bench", res["hh_to_mt_bench"])
    for i, m in enumerate(res["mt_bench_by_question"]):
        show(f"MT-Bench question split {i}", m)
    if a.output:
        with open(a.output, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()

"""Benchmark: uncertainty for the reward model you already have, on real preference data.

"The reward model you already have": a ``BertForSequenceClassification`` on the real MiniLM
weights (``auq.demo.default_backbone()``; its classifier reads BERT's pooler output), whose
classifier head is trained (L2 logistic Bradley-Terry MAP, α = 1) on a random 40% of the bundled
hh-rlhf pairs (split A) and saved as an ordinary ``transformers`` folder. auq then wraps it as is
and fits :class:`~auq.models.WrappedLaplaceRewardModel` (prior centred on the trained head,
α by the evidence, rank 64) and the feature density on split B (30%), without retraining. Split C
(30%) is held out; the MT-Bench pairs are out of domain.

Printed, per seed: held-out accuracy and NLL of the checkpoint's own probability σ(Δr) and of the
Laplace predictive (probit) on C and on MT-Bench; AUROC for telling MT-Bench pairs from C pairs by
(i) the per-response posterior variance (max of the two sides), (ii) the feature density's
Mahalanobis distance (max of the sides), and (iii) the baseline the checkpoint alone offers: the
entropy of its own preference probability.

Features of the pooled penultimate layer are encoded once (``FeatureCache`` in ``--cache``);
encoding 2,439 pairs at 128 tokens takes ~2 minutes on 2 CPU cores.

Measured (3 random splits, mean [min, max]; 2 CPU cores, encoding 5 min once, then seconds):

=====================================  ======================  ======================
                                       evidence α (default)    ``--prior-precision 1``
=====================================  ======================  ======================
chosen α                               1.6, 2.2, 1e8 (bound)   1
held-out accuracy C: own / Laplace     0.566 / 0.567           0.566 / 0.573
held-out NLL C: own / Laplace          0.681 / 0.681           0.681 / 0.682
NLL MT-Bench: own / Laplace            0.705 / 0.706           0.705 / 0.707
AUROC MT vs C: posterior variance      0.762 [0.752, 0.769]    0.764 [0.756, 0.768]
AUROC MT vs C: feature density         0.923 [0.918, 0.926]    0.923
AUROC MT vs C: own entropy (baseline)  0.536 [0.511, 0.567]    0.536
=====================================  ======================  ======================

The checkpoint's own confidence cannot tell out-of-domain pairs (0.54); the Laplace variance
can (0.76), the feature density better (0.92). The posterior mean keeps the checkpoint's
accuracy and NLL (it moves little: split B says what split A said). On one split the evidence
puts α at its upper bound (B agrees with the head so well that the posterior stays on it): the
variance is then ``≈ |f - μ|²/α``, tiny in absolute terms though it ranks responses the same
way; fix ``prior_precision`` where the variance's scale matters.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

import numpy as np
import torch

from auq.calibration import ood_auroc
from auq.data import load_hh_rlhf, load_mt_bench
from auq.demo import default_backbone
from auq.models import FeatureCache, SequenceClassifierRewardModel, fit_laplace_posterior


def _nll_acc(margin_logit: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    lp = -np.logaddexp(0.0, -margin_logit)
    ln = -np.logaddexp(0.0, margin_logit)
    nll = float(-(targets * lp + (1 - targets) * ln).mean())
    acc = float(((margin_logit > 0) == (targets > 0.5)).mean())
    return acc, nll


def _entropy(margin: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-margin))
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def _stats(rm, fc, fr, t):
    """Own and Laplace (accuracy, NLL), per-pair max posterior variance, max density distance, own entropy."""
    own = (fc - fr) @ rm.head_weight.numpy()
    prob = rm.predict_pairs(fc, fr)["prob"].numpy()
    lap = np.log(prob) - np.log1p(-prob)
    var = np.maximum(rm.predictive_reward(fc)[1].numpy(), rm.predictive_reward(fr)[1].numpy())
    dens = np.maximum(rm.density.distance(fc), rm.density.distance(fr))
    return _nll_acc(own, t), _nll_acc(lap, t), var, dens, _entropy(own)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "auq-wrapped-laplace-cache"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--prior-precision", default="auto", help="'auto' (the evidence) or a number")
    args = ap.parse_args()
    logging.getLogger("auq").setLevel(logging.ERROR)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = default_backbone()
    tmp = tempfile.mkdtemp(prefix="auq-wl-")
    clf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    tok = AutoTokenizer.from_pretrained(path)
    wrapped = SequenceClassifierRewardModel([clf], tok, names=[path])
    wrapped.config.max_length = 128
    hh, mt = load_hh_rlhf(), load_mt_bench()
    cache = FeatureCache(args.cache)
    hc, hr = (x.astype(np.float64) for x in cache.features(wrapped, hh, batch_size=64))
    mc, mr = (x.astype(np.float64) for x in cache.features(wrapped, mt, batch_size=64))
    mt_t = np.asarray(mt.targets if mt.targets is not None else np.ones(len(mt)), dtype=np.float64)
    alpha = args.prior_precision if args.prior_precision == "auto" else float(args.prior_precision)
    rows = []
    for seed in range(args.seeds):
        perm = np.random.default_rng(seed).permutation(len(hh))
        a, b, c = np.split(perm, [int(0.4 * len(hh)), int(0.7 * len(hh))])
        # the checkpoint: its head trained on split A and saved as a plain transformers folder
        head = fit_laplace_posterior(hc[a] - hr[a], prior_precision=1.0).mean
        with torch.no_grad():
            clf.classifier.weight.copy_(head.to(torch.float32)[None, :])
            clf.classifier.bias.zero_()
        folder = os.path.join(tmp, f"rm-{seed}")
        clf.save_pretrained(folder)
        tok.save_pretrained(folder)
        # what a user does: wrap it, fit the Laplace last layer and the density on split B
        rm = SequenceClassifierRewardModel.from_sequence_classifier(folder).laplace(n_samples=32, prior_precision=alpha)
        rm.fit_features(hc[b], hr[b])
        rm.fit_uncertainty_from_features(hc[b], hr[b], np.zeros((len(b), 32)), np.zeros((len(b), 32)), strict=False)
        own_c, lap_c, var_c, dens_c, ent_c = _stats(rm, hc[c], hr[c], np.ones(len(c)))
        own_m, lap_m, var_m, dens_m, ent_m = _stats(rm, mc, mr, mt_t)
        row = {
            "alpha": rm.prior_precision,
            "own acc C": own_c[0], "own nll C": own_c[1], "laplace acc C": lap_c[0], "laplace nll C": lap_c[1],
            "own nll MT": own_m[1], "laplace nll MT": lap_m[1],
            "AUROC variance": ood_auroc(var_c, var_m), "AUROC density": ood_auroc(dens_c, dens_m),
            "AUROC own entropy": ood_auroc(ent_c, ent_m),
        }
        rows.append(row)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    print("mean (alpha: median) [min, max] over seeds:")
    for k in rows[0]:
        v = np.array([r[k] for r in rows])
        centre = np.median(v) if k == "alpha" else v.mean()
        print(f"  {k:20s} {centre:.4g} [{v.min():.4g}, {v.max():.4g}]")


if __name__ == "__main__":
    main()

"""Reward over-optimisation with a known gold reward: does penalising ensemble uncertainty help?

Setting (everything synthetic and offline, CPU-sized)
----------------------------------------------------
* **Gold reward**: :class:`auq.data.SyntheticPreferenceGenerator` (8 dimensions x 8 levels = 64
  words, ``nonlinearity`` > 0, so a word's gold score is ``w_j c + a u_j (c^2 - 1)`` in its level
  centre ``c``: extreme levels can be very good or very bad).
* **Reference policy**: a tiny GPT-2 (hidden 48, 2 layers, word-level tokenizer over the 64 words),
  trained by next-token prediction on in-distribution responses (one word per dimension).
* **Proxy reward**: an ensemble of K=8 linear Bradley-Terry models trained on a few hundred labelled
  pairs, each on a bootstrap resample. A member scores a word as ``theta_j c + b_w``: a linear
  trend in the level (one weight per dimension) plus a per-word correction ``b_w`` regularised
  towards a member-specific random anchor (anchored ensembles, Pearce et al. 2020), so words the
  data never showed keep disagreeing members. The trend is misspecified for the quadratic gold, and
  extreme levels are almost never seen in training: the classic recipe for Goodhart's law.
* **Objectives** (:func:`auq.training.losses.penalized_reward`, members centred on reference
  samples): mean, LCB (mean - coef*std), WCO (min over members), UWO (mean - coef*var).
* **Optimisers**: (a) best-of-n from the reference for n = 1..256 (KL = log n - (n-1)/n, expected
  gold of the best of n estimated without bias from one pool of 256 samples per prompt);
  (b) :class:`auq.training.online.OnlineTrainer` (RLOO, KL coefficient ``--kl-coef`` in the
  reward), evaluated every few steps on fresh samples (KL = mean of sum_t log pi - log pi_ref).
  Completions have at most ``--max-new-tokens`` = 8 words, the reference's own length, so only the
  choice of words can be optimised; with more room the policy learns to drop EOS and write longer
  texts (the gold, a sum over words, rewards that too) and the KL jumps by tens of nats.

Gold and proxy are reported relative to the reference policy (0 at KL = 0: best-of-n relative to
the pool's mean, RLOO relative to the step-0 evaluation on the same samples), in gold units (the
proxy is a BT model with the generator's beta = 1, so its scale matches the gold's). The proxy
column is the ensemble mean whatever the objective optimised.

Run ``python benchmarks/overoptimization.py [--quick] [--seeds 0 1 2] [--output DIR]`` (default:
seeds 0 and 1, about 2-4 minutes on 2 busy cores; ``--quick``: seed 0, under a minute); prints the
tables (curves averaged over seeds, a per-seed summary, RLOO gold at matched KL) and writes
``overoptimization.png``/``.pdf`` (one row of panels per seed) and ``overoptimization.csv``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import expit, gammaln, log_expit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from auq.data.synthetic import SyntheticPreferenceGenerator  # noqa: E402
from auq.training.losses import penalized_reward  # noqa: E402
from auq.training.online import OnlineConfig, OnlineTrainer, best_of_n, best_of_n_kl  # noqa: E402

logger = logging.getLogger("overoptimization")

OBJECTIVES = {"mean": ("mean", 0.0), "LCB": ("lcb", 1.0), "WCO": ("wco", 0.0), "UWO": ("uwo", 1.0)}
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]


# ------------------------------------------------------------------ world


def build_policy(gen: SyntheticPreferenceGenerator, directory: str, sft_steps: int, seed: int):
    """Word-level tokenizer + tiny GPT-2 trained on in-distribution responses; saved and reloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = list(gen.vocabulary.ravel())
    vocab = {w: i for i, w in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    ).save_pretrained(os.path.join(directory, "tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(directory, "tokenizer"))
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(vocab), n_embd=48, n_layer=2, n_head=2, n_positions=32,
                     bos_token_id=2, eos_token_id=3, pad_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(sft_steps):
        texts = gen.encode(rng.standard_normal((64, gen.dim)))
        ids = torch.tensor([[2] + [vocab[w] for w in t.split()] + [3] for t in texts])
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    logger.info("reference SFT: %d steps, final NLL %.3f nats/token", sft_steps, loss.item())
    model.save_pretrained(os.path.join(directory, "reference"))
    return os.path.join(directory, "reference"), tokenizer, loss.item()


class ProxyEnsemble:
    """K anchored, bootstrapped linear BT models over [level trend per dimension, word counts]."""

    def __init__(self, gen: SyntheticPreferenceGenerator, n_pairs: int, n_members: int = 8,
                 anchor_scale: float = 0.5, seed: int = 0):
        self.words = list(gen.vocabulary.ravel())
        self.index = {w: i for i, w in enumerate(self.words)}
        v, d = len(self.words), gen.dim
        phi = np.zeros((v, d + v))
        phi[np.arange(v), np.repeat(np.arange(d), gen.n_levels)] = np.tile(gen.centres, d)
        phi[np.arange(v), d + np.arange(v)] = 1.0
        data = gen.sample(n_pairs, seed=1000 + seed).dataset
        diff = (self.counts(data.chosen) - self.counts(data.rejected)) @ phi
        prec = np.r_[np.full(d, 1e-2), np.full(v, 1.0 / anchor_scale**2)]
        rng = np.random.default_rng(seed)
        thetas = []
        for _ in range(n_members):
            x = diff[rng.integers(0, n_pairs, n_pairs)]
            anchor = np.r_[np.zeros(d), anchor_scale * rng.standard_normal(v)]

            def f(th, x=x, anchor=anchor):
                z = x @ th
                return (-log_expit(z).sum() + 0.5 * (prec * (th - anchor) ** 2).sum(),
                        -x.T @ expit(-z) + prec * (th - anchor))

            thetas.append(phi @ minimize(f, anchor, jac=True, method="L-BFGS-B").x)
        self.word_rewards = np.stack(thetas, 1)  # [V, K]
        self.train_counts = self.counts(data.chosen + data.rejected).sum(0)

    def counts(self, texts):
        x = np.zeros((len(texts), len(self.words)))
        for i, t in enumerate(texts):
            for w in t.split():
                j = self.index.get(w)
                if j is not None:
                    x[i, j] += 1
        return x

    def __call__(self, prompts, completions):
        return self.counts(completions) @ self.word_rewards


# ------------------------------------------------------------------ best of n


def bon_expectation(objective: np.ndarray, values: np.ndarray, n: int) -> float:
    """Unbiased E[value of the objective's argmax over a random n-subset], averaged over prompts.

    ``objective``/``values`` ``[m, N]``: sorted by objective, the i-th smallest (1-based) is the best of
    a random n-subset with probability C(i-1, n-1)/C(N, n).
    """
    m, big_n = objective.shape
    i = np.arange(1, big_n + 1)
    logw = np.full(big_n, -np.inf)
    ok = i >= n
    logw[ok] = (gammaln(i[ok]) - gammaln(n) - gammaln(i[ok] - n + 1)) - (
        gammaln(big_n + 1) - gammaln(n + 1) - gammaln(big_n - n + 1))
    w = np.exp(logw)
    order = np.argsort(objective, axis=1, kind="stable")
    return float((np.take_along_axis(values, order, 1) * w).sum(1).mean())


def run_best_of_n(policy, tokenizer, proxy, gen, n_prompts, pool, max_new_tokens, seed, offsets_out):
    pool_res = best_of_n(policy, tokenizer, ["<bos>"] * n_prompts, proxy, n=pool, method="mean",
                         max_new_tokens=max_new_tokens, seed=seed, batch_size=4096)
    comps = [c for row in pool_res.candidates for c in row]
    member = pool_res.candidate_member_rewards.reshape(len(comps), -1)
    gold = gen.reward(comps)
    offsets = member.mean(0)
    offsets_out["offsets"] = offsets
    offsets_out["gold_ref"] = float(gold.mean())
    proxy_mean = (member - offsets).mean(1)
    rows = []
    ns = [2**e for e in range(int(math.log2(pool)) + 1)]
    for name, (method, coef) in OBJECTIVES.items():
        obj = penalized_reward(member, method, coef=coef, member_offsets=offsets).reshape(n_prompts, pool)
        for n in ns:
            rows.append(dict(method="best-of-n", objective=name, n=n, step=np.nan, kl=best_of_n_kl(n),
                             gold=bon_expectation(obj, gold.reshape(n_prompts, pool), n) - offsets_out["gold_ref"],
                             proxy=bon_expectation(obj, proxy_mean.reshape(n_prompts, pool), n)))
    return rows


# ------------------------------------------------------------------ online RLOO


def run_online(ref_path, tokenizer, proxy, gen, offsets, gold_ref, steps, eval_every, eval_samples,
               max_new_tokens, kl_coef, seed, lr):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(ref_path)
    rows = []
    for name, (method, coef) in OBJECTIVES.items():
        policy = AutoModelForCausalLM.from_pretrained(ref_path)
        cfg = OnlineConfig(algorithm="rloo", max_steps=steps, per_device_train_batch_size=8, k=4,
                           max_new_tokens=max_new_tokens, learning_rate=lr, penalty_method=method,
                           penalty_coef=coef, kl_coef=kl_coef, kl_estimator="k1", seed=seed,
                           disable_tqdm=True)
        trainer = OnlineTrainer(policy, ref, tokenizer, proxy, ["<bos>"], cfg, member_offsets=offsets)

        def evaluate(tr, _out=None, name=name):
            if tr.step_count % eval_every:
                return
            ro = tr.rollout(["<bos>"], k=eval_samples, seed=10_000 + seed)
            member = proxy(None, ro.completions)
            rows.append(dict(method="RLOO", objective=name, n=np.nan, step=tr.step_count,
                             kl=max(float(ro.kl.mean()), 0.0),
                             gold=float(gen.reward(ro.completions).mean()) - gold_ref,
                             proxy=float((member - offsets).mean()),
                             length=float(ro.response_mask.sum(1).mean())))

        evaluate(trainer)
        t0 = time.time()
        trainer.train(callback=evaluate)
        logger.info("RLOO %s: %d steps in %.1fs", name, steps, time.time() - t0)
    return rows


def center_online(df):
    """RLOO rows relative to their own step-0 evaluation (the reference on the same evaluation
    samples), so sampling noise of the evaluation set does not offset the curves at KL = 0."""
    df = df.copy()
    rl = df.method == "RLOO"
    for col in ("gold", "proxy"):
        base = df[rl & (df.step == 0)].set_index(["seed", "objective"])[col]
        keys = list(zip(df.loc[rl, "seed"], df.loc[rl, "objective"]))
        df.loc[rl, col] = df.loc[rl, col].to_numpy() - base.loc[keys].to_numpy()
    return df


# ------------------------------------------------------------------ report


def draw(df, path):
    """One row of panels per seed: (a) best-of-n, (b) online RLOO; gold solid, proxy dashed."""
    import matplotlib.pyplot as plt

    from auq.plots import overoptimization_plot, paper_style, save_figure

    seeds = sorted(df.seed.unique())
    with paper_style():
        fig, axes = plt.subplots(len(seeds), 2, figsize=(7.0, 0.6 + 2.6 * len(seeds)),
                                 constrained_layout=True, squeeze=False)
        for r, seed in enumerate(seeds):
            for c, (method, title) in enumerate((("best-of-n", "best-of-n from the reference"),
                                                 ("RLOO", "online RLOO"))):
                ax = axes[r, c]
                sub = df[(df.method == method) & (df.seed == seed)]
                series = {name: (g.kl.to_numpy(), g.gold.to_numpy(), g.proxy.to_numpy())
                          for name, g in sub.groupby("objective", sort=False)}
                overoptimization_plot(series, title=f"({chr(97 + 2 * r + c)}) {title}, seed {seed}", ax=ax)
                ax.axhline(0.0, color="0.6", linewidth=0.6, zorder=1)
                ax.set_ylabel("reward \N{MINUS SIGN} reference")
                leg = ax.get_legend()
                handles, labels = leg.legend_handles, [t.get_text() for t in leg.get_texts()]
                leg.remove()
                if r < len(seeds) - 1:
                    ax.set_xlabel("")
        # one legend for all panels: colours = objectives, line style = gold / proxy
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
        save_figure(fig, path)
        plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="about a minute: smaller pools, fewer steps")
    p.add_argument("--output", default="benchmark_results/overoptimization")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="reward/data/policy seeds (default: 0 1; --quick: 0)")
    p.add_argument("--n-pairs", type=int, default=300, help="labelled pairs the proxy ensemble sees")
    p.add_argument("--nonlinearity", type=float, default=0.5)
    p.add_argument("--kl-coef", type=float, default=0.02)
    p.add_argument("--max-new-tokens", type=int, default=8,
                   help="completion budget; references write 8 words + EOS, so the default keeps the "
                        "length fixed and only the choice of words can be optimised (more lets length grow)")
    p.add_argument("--lr", type=float, default=1e-3, help="RLOO learning rate")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("fontTools", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    q = args.quick
    settings = dict(sft_steps=150 if q else 400, n_prompts=32 if q else 128, pool=128 if q else 256,
                    steps=40 if q else 120, eval_every=10 if q else 15, eval_samples=128 if q else 256)
    max_new_tokens = args.max_new_tokens
    seeds = args.seeds if args.seeds is not None else ([0] if q else [0, 1])
    t_start = time.time()
    rows: list[dict] = []
    nlls = []
    for seed in seeds:
        gen = SyntheticPreferenceGenerator(dim=8, n_levels=8, beta=1.0, nonlinearity=args.nonlinearity,
                                           reward_seed=seed)
        work = os.path.join(args.output, f"seed-{seed}")
        ref_path, tokenizer, nll = build_policy(gen, work, settings["sft_steps"], seed)
        nlls.append(nll)
        proxy = ProxyEnsemble(gen, args.n_pairs, seed=seed)
        from transformers import AutoModelForCausalLM

        ref = AutoModelForCausalLM.from_pretrained(ref_path)
        extra: dict = {}
        seed_rows = run_best_of_n(ref, tokenizer, proxy, gen, settings["n_prompts"], settings["pool"],
                                  max_new_tokens, seed, extra)
        logger.info("seed %d: best-of-n done at %.0fs", seed, time.time() - t_start)
        seed_rows += run_online(ref_path, tokenizer, proxy, gen, extra["offsets"], extra["gold_ref"],
                                settings["steps"], settings["eval_every"], settings["eval_samples"],
                                max_new_tokens, args.kl_coef, seed, lr=args.lr)
        rows += [dict(r, seed=seed) for r in seed_rows]
    import pandas as pd

    df = center_online(pd.DataFrame(rows))
    df.to_csv(os.path.join(args.output, "overoptimization.csv"), index=False)
    keys = ["method", "objective", "n", "step"]
    avg = df.groupby(keys, sort=False, dropna=False)[["kl", "gold", "proxy", "length"]].mean().reset_index()
    draw(df, os.path.join(args.output, "overoptimization"))
    pd.set_option("display.width", 160)
    print(f"# over-optimisation benchmark (seeds {seeds}, {args.n_pairs} proxy pairs, nonlinearity "
          f"{args.nonlinearity}, RLOO lr {args.lr}, KL coef {args.kl_coef}; reference SFT NLL "
          f"{np.mean(nlls):.3f}; {time.time() - t_start:.0f}s)")
    print("# gold/proxy: mean reward minus the reference policy's, in gold units; averaged over seeds")
    bon = avg[avg.method == "best-of-n"].pivot(index="n", columns="objective", values=["gold", "proxy"])
    bon.insert(0, ("kl", ""), [best_of_n_kl(int(n)) for n in bon.index])
    print("\n## best-of-n\n" + bon.round(3).to_string())
    rl = avg[avg.method == "RLOO"].pivot(index="step", columns="objective", values=["kl", "gold", "proxy", "length"])
    print("\n## online RLOO\n" + rl.round(2).to_string())
    summary = df.groupby(["method", "objective", "seed"], sort=False).agg(
        peak_gold=("gold", "max"), final_gold=("gold", "last"), final_proxy=("proxy", "last"),
        final_kl=("kl", "last")).unstack("seed")
    print("\n## summary per seed (final = last n / last step)\n" + summary.round(2).to_string())
    # RLOO runs reach different KLs: compare gold at matched KL (linear interpolation along each curve)
    grid = [1.0, 2.0, 5.0, 10.0, 20.0, 40.0]
    matched = []
    for (seed, name), g in df[df.method == "RLOO"].groupby(["seed", "objective"], sort=False):
        g = g.sort_values("kl")
        for k in grid:
            if k <= g.kl.max():
                matched.append(dict(seed=seed, objective=name, kl=k, gold=float(np.interp(k, g.kl, g.gold))))
    if matched:
        mt = pd.DataFrame(matched).pivot_table(index=["seed", "kl"], columns="objective", values="gold",
                                               sort=False)
        print("\n## RLOO gold at matched KL (blank: the run never reached that KL)\n" + mt.round(2).to_string())
    print(f"\nfigure: {os.path.join(args.output, 'overoptimization.png')} (+ .pdf), table: overoptimization.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

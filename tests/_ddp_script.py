"""Helper of tests/test_ddp.py: train the DPO or the online trainer on 1 or 2 processes.

Run as ``accelerate launch --multi_gpu --num_processes 2 tests/_ddp_script.py MODE ...`` (2 CPU
processes, gloo) or as ``python tests/_ddp_script.py MODE ...`` (one process). The global batch is
the per-process batch times the number of processes, so both runs see the same global batches.
The main process writes its results under OUT (safetensors + JSON); every process writes
``proc<rank>.safetensors`` with its own final weights.

The models run in float64: in float32 the two runs' gradients differ by round-off (~1e-7, batch
shapes differ), and AdamW turns round-off on parameters whose true gradient is zero (GPT-2's
attention key biases: softmax is shift-invariant) into steps of up to ~0.04·lr, so the weights
could only be compared loosely; in float64 they agree to ~1e-12.

* ``dpo LM_DIR OUT PER_DEVICE``: :class:`UncertaintyDPOTrainer` with per-pair weights, soft
  targets and precomputed reference log-probs for 4 steps (a checkpoint every 2), then a second
  trainer resumed from ``checkpoint-2`` to step 4.
* ``online LM_DIR OUT PER_DEVICE rloo,ppo``: :class:`OnlineTrainer` (each algorithm under ``OUT/<algorithm>``) for 2 steps on FIXED
  rollouts (sampled once from all the step's prompts with one seed, each process taking its rows),
  then 1 ordinary step (each process samples its own prompts), then a checkpoint that a fresh
  trainer loads: one more step of each must agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _save_weights(model, path: str) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, path)


def _write(out: str, rank: int, model, result: dict) -> None:
    os.makedirs(out, exist_ok=True)
    if model is not None:
        _save_weights(model, os.path.join(out, f"proc{rank}.safetensors"))
    if rank == 0:
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f)


# SENTENCES of _tiny_models: prompt = the first two words, chosen = the rest, rejected = the rest of the next
def dpo_pairs():
    from _tiny_models import SENTENCES

    from auq.data import PreferenceDataset

    words = [s.split() for s in SENTENCES]
    prompts = [" ".join(w[:2]) for w in words]
    chosen = [" " + " ".join(w[2:]) for w in words]
    rejected = chosen[1:] + chosen[:1]
    return PreferenceDataset(
        prompts, chosen, rejected,
        weights=[1.0, 2.0, 1.0, 0.5, 1.0, 3.0, 1.0, 0.25],
        targets=[1.0, 0.9, 1.0, 0.8, 1.0, 1.0, 0.7, 1.0],
    )  # fmt: skip


def run_dpo(lm_dir: str, out: str, per_device: int) -> None:
    from _tiny_models import load_tiny_lm
    from transformers import AutoTokenizer

    from auq.training import UncertaintyDPOConfig, UncertaintyDPOTrainer

    tok = AutoTokenizer.from_pretrained(lm_dir)
    ds = dpo_pairs()

    def trainer(output_dir: str) -> UncertaintyDPOTrainer:
        cfg = UncertaintyDPOConfig(
            output_dir=output_dir, beta=0.5, learning_rate=5e-3, max_steps=4, per_device_train_batch_size=per_device,
            per_device_eval_batch_size=3, shuffle=True, seed=3, precompute_ref_logps=True, save_steps=2,
            logging_steps=1, disable_tqdm=True, max_length=32,
        )  # fmt: skip
        return UncertaintyDPOTrainer(load_tiny_lm(lm_dir, perturb=0.05).double(), cfg, ds, tok,
                                     ref_model=load_tiny_lm(lm_dir).double())

    full = trainer(os.path.join(out, "run"))
    full.train()
    acc = full.accelerator
    final = full.save_model(os.path.join(out, "final"))
    resumed = trainer(os.path.join(out, "resumed"))
    resumed.train(resume_from_checkpoint=os.path.join(out, "run", "checkpoint-2"))
    model = acc.unwrap_model(full.model)
    if acc.is_main_process:
        _save_weights(acc.unwrap_model(resumed.model), os.path.join(out, "resumed.safetensors"))
        from safetensors.torch import save_file

        save_file({"logps": full._ref_cache["logps"]}, os.path.join(out, "ref_logps.safetensors"))
    _write(out, acc.process_index, model, {
        "num_processes": acc.num_processes, "log_history": full.log_history,
        "resumed_log_history": resumed.log_history, "final": final,
        "checkpoints": sorted(os.listdir(os.path.join(out, "run"))),
    })  # fmt: skip
    acc.wait_for_everyone()


# ------------------------------------------------------------------------------------- online


def count_reward(prompts, completions, target: str):
    """Two members: the count of ``target``, and the count plus a per-length disagreement."""
    import numpy as np

    c = np.array([x.split().count(target) for x in completions], dtype=float)
    length = np.array([len(x.split()) for x in completions], dtype=float)
    return np.stack([c, c + 0.3 * length], axis=1)


def slice_rollout(ro, start: int, stop: int):
    def cut(v):
        if torch.is_tensor(v) or isinstance(v, list):
            return v[start:stop]
        return v

    return dataclasses.replace(ro, **{f.name: cut(getattr(ro, f.name)) for f in dataclasses.fields(ro)})


def run_online(lm_dir: str, out: str, per_device: int, algorithm: str = "rloo") -> None:
    from _tiny_models import load_tiny_lm
    from transformers import AutoTokenizer

    from auq.training import OnlineConfig, OnlineTrainer

    tok = AutoTokenizer.from_pretrained(lm_dir)
    prompts = ["the", "a", "please", "what"]  # one token each: rollouts concatenate without re-padding
    cfg = OnlineConfig(
        per_device_train_batch_size=per_device, k=3, max_new_tokens=5, learning_rate=3e-3, kl_coef=0.05,
        penalty_method="lcb", penalty_coef=0.5, max_grad_norm=1.0, disable_tqdm=True, seed=5,
        output_dir=os.path.join(out, "run"), algorithm=algorithm,
    )  # fmt: skip
    def eos_prone():
        # +4 on the EOS logit (through ln_f's bias), so completions end at different lengths and the
        # processes hold different numbers of tokens: the token mean must be a global one
        m = load_tiny_lm(lm_dir).double()
        with torch.no_grad():
            w = m.transformer.wte.weight[tok.eos_token_id]
            m.transformer.ln_f.bias += 4.0 * w / w.dot(w)
        return m

    trainer = OnlineTrainer(eos_prone(), eos_prone(), tok, lambda p, c: count_reward(p, c, "is"), prompts, cfg)
    acc = trainer.accelerator
    rank, n_proc = acc.process_index, acc.num_processes
    fixed = []
    for s in range(2):
        # the step's global prompts, sampled once with one seed; this process's rows of them
        global_prompts = [p for r in range(n_proc) for p in trainer._batch_prompts(s, rank=r)]
        ro = trainer.rollout(global_prompts, seed=100 + s)
        n = len(ro) // n_proc
        stats = trainer.step(rollout=slice_rollout(ro, rank * n, (rank + 1) * n))
        fixed.append({k: v for k, v in stats.items() if isinstance(v, float)})
        fixed[-1]["tokens"] = ro.response_mask.reshape(n_proc, -1).sum(1).tolist()  # per process
    if acc.is_main_process:
        os.makedirs(out, exist_ok=True)
        _save_weights(trainer.policy, os.path.join(out, "after_fixed.safetensors"))
    local = {}

    def record(tr, step_out):
        local.update(tr._local_stats)

    trainer.train(steps=1, callback=record)
    local_all = acc.gather(torch.tensor([local[k] for k in sorted(local)], dtype=torch.float64).reshape(1, -1))
    _save_weights(trainer.policy, os.path.join(out, f"proc{rank}.safetensors"))
    # a checkpoint after step 3 (main process writes, each its RNG); a fresh trainer on the same
    # processes loads it, and one more step of each gives the same weights and statistics
    ckpt = trainer.save_checkpoint()
    resumed = OnlineTrainer(eos_prone(), eos_prone(), tok, lambda p, c: count_reward(p, c, "is"), prompts, cfg)
    resumed.load_checkpoint(ckpt)
    trainer.step()
    resumed.step()
    same = all(torch.equal(a, b) for a, b in zip(trainer.policy.parameters(), resumed.policy.parameters()))
    same = same and trainer.records == resumed.records
    resumed_same = acc.gather(torch.tensor([float(same)], dtype=torch.float64)).tolist()
    _write(out, rank, None, {
        "num_processes": n_proc, "fixed": fixed, "records": trainer.records[:3],
        "resumed_same": resumed_same, "checkpoint_files": sorted(os.listdir(ckpt)),
        "local_keys": sorted(local), "local_stats": local_all.tolist(),
        "offsets": trainer.member_offsets.tolist(),
    })  # fmt: skip
    acc.wait_for_everyone()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode = sys.argv[1]
    if mode == "dpo":
        run_dpo(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "online":
        for algorithm in sys.argv[5].split(","):  # one launch for several algorithms: OUT/<algorithm>
            run_online(sys.argv[2], os.path.join(sys.argv[3], algorithm), int(sys.argv[4]), algorithm)
    elif mode == "all":  # one launch for every trainer (process start-up dominates): OUT/dpo, OUT/<algorithm>
        run_dpo(sys.argv[2], os.path.join(sys.argv[3], "dpo"), int(sys.argv[4]))
        for algorithm in ("rloo", "ppo"):
            run_online(sys.argv[2], os.path.join(sys.argv[3], algorithm), int(sys.argv[4]), algorithm)
    else:
        raise SystemExit(f"unknown mode {mode!r}")

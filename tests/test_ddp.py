"""Data parallel (DDP) runs of the DPO and online trainers: 2 CPU processes (gloo) under
``accelerate launch`` against 1 process with the same global batch (``tests/_ddp_script.py``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from _launch import run_one_and_two
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "_ddp_script.py")



@pytest.fixture(scope="module")
def runs(tiny_lm_dir, tmp_path_factory) -> tuple[str, str]:
    """One launch of every trainer: 2 processes x 2 (pairs or prompts) and 1 process x 4;
    the folders ``(two, one)`` hold ``dpo/``, ``rloo/`` and ``ppo/``."""
    root = tmp_path_factory.mktemp("ddp")
    two, one = str(root / "two"), str(root / "one")
    run_one_and_two([SCRIPT, "all", tiny_lm_dir, two, "2"], [SCRIPT, "all", tiny_lm_dir, one, "4"])
    return two, one


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_dpo_two_processes_match_one(tiny_lm_dir, runs):
    """2 processes x 2 pairs == 1 process x 4 pairs: weighted soft-target DPO with precomputed
    reference log-probs, 4 steps; checkpoints written once; resuming on 2 processes is exact."""
    from _ddp_script import dpo_pairs
    from _tiny_models import load_tiny_lm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from auq.training.dpo_trainer import CausalLMPreferenceCollator, sequence_logps

    two, one = (os.path.join(d, "dpo") for d in runs)
    r1 = json.load(open(os.path.join(one, "result.json")))
    r2 = json.load(open(os.path.join(two, "result.json")))
    assert (r1["num_processes"], r2["num_processes"]) == (1, 2)

    # the global batches and the loss: the weighted mean divides by the global sum of weights
    h1, h2 = r1["log_history"], r2["log_history"]
    assert [e["step"] for e in h2] == [1, 2, 3, 4]
    for e1, e2 in zip(h1, h2):
        for k in ("loss", "rewards/accuracy", "rewards/margins", "weights/mean", "targets/mean"):
            assert e2[k] == pytest.approx(e1[k], rel=1e-5, abs=1e-6), (e1["step"], k)
    assert len({e["weights/mean"] for e in h1}) > 1  # batches of different weights: the normaliser matters

    # DDP keeps the processes' weights identical; they equal the one-process weights
    p0, p1 = load_file(os.path.join(two, "proc0.safetensors")), load_file(os.path.join(two, "proc1.safetensors"))
    w1 = load_file(os.path.join(one, "proc0.safetensors"))
    assert _max_diff(p0, p1) == 0.0
    init = load_tiny_lm(tiny_lm_dir, perturb=0.05).state_dict()
    assert _max_diff(w1, {k: v for k, v in init.items() if k in w1}) > 1e-3  # training moved the weights
    assert _max_diff(p0, w1) < 1e-9  # float64 (see _ddp_script): measured 6e-13

    # reference log-probs: computed half per process, gathered; each pair's row is its own
    ref1 = load_file(os.path.join(one, "ref_logps.safetensors"))["logps"]
    ref2 = load_file(os.path.join(two, "ref_logps.safetensors"))["logps"]
    torch.testing.assert_close(ref2, ref1, rtol=0, atol=1e-6)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    col, ref, ds = CausalLMPreferenceCollator(tok, 32), load_tiny_lm(tiny_lm_dir), dpo_pairs()
    with torch.no_grad():
        for i in range(len(ds)):
            b = col([ds[i]])
            lp, _ = sequence_logps(ref, b["input_ids"], b["attention_mask"], b["response_mask"])
            torch.testing.assert_close(ref2[i], lp.double(), rtol=0, atol=1e-5)
    assert len(set(ref2[:, 0].tolist())) == len(ds)

    # checkpoints: one folder per save, written by the main process, each process's RNG beside it
    assert r2["checkpoints"] == ["checkpoint-2", "checkpoint-4"]
    files = sorted(os.listdir(os.path.join(two, "run", "checkpoint-2")))
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors", "trainer_state.json", "model"} <= set(files)
    assert json.load(open(os.path.join(two, "run", "checkpoint-2", "trainer_state.json")))["num_processes"] == 2
    assert not [f for f in os.listdir(os.path.join(two, "run")) if f.startswith(".")]
    # resumed from checkpoint-2 on 2 processes: the same run, bit for bit
    assert r2["resumed_log_history"] == h2
    assert _max_diff(load_file(os.path.join(two, "resumed.safetensors")), p0) == 0.0
    # save_model: the final policy, loadable
    final = AutoModelForCausalLM.from_pretrained(r2["final"]).state_dict()
    assert _max_diff({k: final[k] for k in p0}, p0) == 0.0


@pytest.mark.slow
def test_online_two_processes_match_one(tiny_lm_dir, runs):
    """RLOO and PPO on 2 processes (2 prompts x k=3 each) == 1 process (4 prompts) for fixed rollouts
    (token means over the global token count; PPO's advantages whitened with global statistics);
    then a sampled step keeps both processes identical and logs the means over processes."""
    two, one = runs
    for algorithm in ("rloo", "ppo"):
        _check_online(tiny_lm_dir, os.path.join(two, algorithm), os.path.join(one, algorithm), algorithm)


def _check_online(tiny_lm_dir: str, two: str, one: str, algorithm: str) -> None:
    from _tiny_models import load_tiny_lm

    r1 = json.load(open(os.path.join(one, "result.json")))
    r2 = json.load(open(os.path.join(two, "result.json")))
    assert (r1["num_processes"], r2["num_processes"]) == (1, 2)
    # member offsets from the first batch: the means over every process's rows
    np.testing.assert_allclose(r2["offsets"], r1["offsets"], rtol=0, atol=1e-12)
    tol = 1e-6 if algorithm == "rloo" else 1e-4  # PPO: the float32 value head's round-off (measured 1.5e-5)
    for s1, s2 in zip(r1["fixed"], r2["fixed"]):
        for k in ("reward_mean", "reward_std", "penalized_reward", "kl", "response_length", "loss"):
            assert s2[k] == pytest.approx(s1[k], rel=tol, abs=tol), k
    assert r1["fixed"][1]["kl"] != 0.0  # the second step's policy has moved: a real KL term
    assert any(len(set(f["tokens"])) > 1 for f in r2["fixed"])  # the processes held different token counts
    f1 = load_file(os.path.join(one, "after_fixed.safetensors"))
    f2 = load_file(os.path.join(two, "after_fixed.safetensors"))
    init = load_tiny_lm(tiny_lm_dir).state_dict()  # (the script raised ln_f's bias: left out here)
    moved = max(float((f1[k] - init[k].double()).abs().max()) for k in f1 if k != "transformer.ln_f.bias")
    assert moved > 1e-3  # training moved the weights
    # measured 4e-9 (RLOO: the rewards enter as float32), 3e-6 (PPO: the value head is float32)
    assert _max_diff(f2, f1) < (1e-7 if algorithm == "rloo" else 2e-5)

    # a sampled step: each process its own prompts and seed; DDP keeps the weights identical
    p0, p1 = load_file(os.path.join(two, "proc0.safetensors")), load_file(os.path.join(two, "proc1.safetensors"))
    assert _max_diff(p0, p1) == 0.0 and _max_diff(p0, f2) > 0
    local = np.array(r2["local_stats"])  # [process, statistic]
    assert local.shape == (2, len(r2["local_keys"]))
    last = r2["records"][-1]
    for j, k in enumerate(r2["local_keys"]):
        assert last[k] == pytest.approx(local[:, j].mean(), abs=1e-12), k
    # checkpoint on 2 processes: written once, every process's RNG beside it; resuming continues exactly
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors", "trainer_state.json"} <= set(r2["checkpoint_files"])
    assert r2["resumed_same"] == [1.0, 1.0] and r1["resumed_same"] == [1.0]  # per process
    assert not np.allclose(local[0], local[1])  # the processes really saw different samples


def test_sharded_engines_are_refused_where_unsupported_and_save_gathers():
    """FSDP / DeepSpeed: resumable checkpoints and the online / reward trainers refuse with a
    ValueError naming the setting; DDP and one process pass; the final save asks for the gathered
    state only when parameters are sharded."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from auq.training._accelerate import (
        check_resumable_checkpoints,
        full_state_dict,
        refuse_sharding,
    )

    gathered = {"w": torch.ones(2)}
    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP, get_state_dict=lambda model: gathered)
    ds = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, get_state_dict=lambda model: 1 / 0)
    for acc in (fsdp, ds):
        with pytest.raises(ValueError, match="save_steps=5.*save_model"):
            check_resumable_checkpoints(acc, 5)
        check_resumable_checkpoints(acc, 0)
        with pytest.raises(ValueError, match="OnlineTrainer runs on one process or under DDP"):
            refuse_sharding(acc, "OnlineTrainer", "generation")
    check_resumable_checkpoints(ddp, 5)
    refuse_sharding(ddp, "OnlineTrainer", "generation")
    assert full_state_dict(object(), fsdp) is gathered
    assert full_state_dict(object(), ddp) is None and full_state_dict(object(), None) is None


def test_save_model_files_writes_a_given_full_state_dict(tiny_lm_dir, tmp_path):
    """What the DPO trainer's save_model does under FSDP / DeepSpeed: the gathered state dict, not the
    (sharded) module's own, goes to ``save_pretrained``; loading the folder gives those weights."""
    from _tiny_models import load_tiny_lm
    from transformers import AutoModelForCausalLM

    from auq.training._checkpoint import save_model_files

    model = load_tiny_lm(tiny_lm_dir)
    full = {k: v + 1.0 for k, v in load_tiny_lm(tiny_lm_dir, perturb=0.1).state_dict().items()}
    save_model_files(model, str(tmp_path / "hf"), state_dict=full)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).state_dict()
    assert _max_diff({k: loaded[k] for k in full}, full) == 0.0
    assert _max_diff({k: loaded[k] for k in full}, model.state_dict()) > 0.5
    plain = torch.nn.Linear(2, 2)  # no save_pretrained: model.safetensors from the given state dict
    given = {"weight": torch.full((2, 2), 3.0), "bias": torch.zeros(2)}
    save_model_files(plain, str(tmp_path / "plain"), state_dict=given)
    assert _max_diff(load_file(str(tmp_path / "plain" / "model.safetensors")), given) == 0.0

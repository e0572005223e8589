"""Benchmark: the disk size of a heads ensemble's checkpoints when the frozen trunk is stored once.

A K=4 linear-heads ensemble on the real MiniLM trunk (``auq.demo.default_backbone()``, frozen) is
trained on the first ``--pairs`` bundled hh-rlhf pairs with a checkpoint after every step
(``--checkpoints`` of them). Printed: the one trunk copy in ``<output_dir>/trunk/``, each
``checkpoint-*`` folder (heads, optimizer, RNG and trainer state, tokenizer, and a checksummed
reference to the trunk), the whole output folder, and what the same checkpoints would take
self-contained (one ``save_pretrained`` folder with the trunk inside, times the count). Then the
last checkpoint is loaded and its rewards compared bit for bit with the trained model's.

Target: a heads-ensemble checkpoint <= 5 MB beyond a single copy of the trunk.

Measured (96 pairs, 12 checkpoints): trunk copy 90.87 MB, written once; one checkpoint 0.77 MB
(of which the tokenizer 0.71 MB, the heads 0.006 MB); all 12 checkpoints 9.19 MB; output folder
191.7 MB = trunk 90.9 + checkpoints 9.2 + the self-contained final model 91.6. The same
checkpoints self-contained: 12 x 91.6 = 1,099 MB. Reloaded rewards equal the trained model's bit
for bit.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile

import torch

from auq.data import load_hh_rlhf
from auq.demo import default_backbone
from auq.models import RewardEnsemble, load_reward_model
from auq.training import HEADS_RECIPE, RewardModelTrainer, RewardTrainerConfig


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--checkpoints", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    logging.getLogger("auq").setLevel(logging.ERROR)  # 96 pairs are too few for a feature density: not the point here
    data = load_hh_rlhf(n=args.pairs)
    tmp = tempfile.mkdtemp(prefix="auq-ckpt-")
    out = os.path.join(tmp, "run")
    model = RewardEnsemble.from_backbone(default_backbone(), kind="heads", n_members=4, seed=0)
    batch = max(1, args.pairs // args.checkpoints)
    recipe = dict(HEADS_RECIPE, num_train_epochs=1.0, per_device_train_batch_size=batch, gradient_accumulation_steps=1)
    cfg = RewardTrainerConfig(
        output_dir=out, max_length=128, seed=0, save_steps=1, disable_tqdm=True, logging_steps=10_000,
        feature_cache_dir=os.path.join(tmp, "cache"), **recipe,
    )
    trainer = RewardModelTrainer(model, cfg, data)
    trainer.train()
    trainer.save_model()

    mb = 1e6
    trunk = _size(os.path.join(out, "trunk"))
    ckpts = sorted((d for d in os.listdir(out) if d.startswith("checkpoint-")), key=lambda d: int(d.split("-")[1]))
    sizes = [_size(os.path.join(out, d)) for d in ckpts]
    last = os.path.join(out, ckpts[-1])
    tok = _size(os.path.join(last, "model", "tokenizer"))
    heads = _size(os.path.join(last, "model", "model.safetensors"))
    contained = _size(os.path.join(out, "model.safetensors"))  # heads and trunk together
    final = sum(_size(os.path.join(out, e)) for e in os.listdir(out) if e not in ckpts and e not in ("trunk", "feature-cache"))
    print(f"checkpoints written          {len(ckpts)}")
    print(f"trunk copy (once)            {trunk / mb:8.2f} MB")
    print(f"one checkpoint, largest      {max(sizes) / mb:8.2f} MB  (tokenizer {tok / mb:.2f}, heads {heads / mb:.3f})")
    print(f"all checkpoints              {sum(sizes) / mb:8.2f} MB")
    print(f"output folder                {_size(out) / mb:8.2f} MB  (final self-contained model {final / mb:.2f})")
    print(f"self-contained checkpoints   {len(ckpts) * (max(sizes) - heads + contained) / mb:8.2f} MB  (the same, trunk inside each)")
    print(f"target: checkpoint <= 5 MB beyond the trunk: {'met' if max(sizes) <= 5 * mb else 'NOT met'}")

    loaded = load_reward_model(os.path.join(last, "model"))
    b = model.tokenizer(["Human: hi Assistant: hello", "Human: hi Assistant: no"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        same = torch.equal(loaded(b["input_ids"], b["attention_mask"]), model(b["input_ids"], b["attention_mask"]))
    print(f"reloaded last checkpoint gives bit-identical rewards: {same}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

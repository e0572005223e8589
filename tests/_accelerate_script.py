"""Helper for the data-parallel test: train a tiny reward model and save its final weights.

Run as ``accelerate launch --num_processes 2 --cpu tests/_accelerate_script.py BACKBONE OUT 4`` or
as ``python tests/_accelerate_script.py BACKBONE OUT 8`` (one process): the global batch is the
per-device batch times the number of processes, so both runs see the same global batches.
Writes ``OUT/final.safetensors`` (every weight) and ``OUT/data_order.json`` (dataset indices per
optimizer step, gathered over processes) from the main process.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _trainer_fixtures import synthetic_pairs  # noqa: E402

from auq.models import RewardEnsemble  # noqa: E402
from auq.training import RewardModelTrainer, RewardTrainerConfig  # noqa: E402


def main() -> None:
    backbone, out, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    model = RewardEnsemble.from_backbone(backbone, kind="heads", n_members=3, seed=0, train_trunk=True)
    config = RewardTrainerConfig(
        output_dir=out,
        max_steps=16,
        per_device_train_batch_size=per_device,
        learning_rate=3e-3,
        weight_decay=0.01,
        warmup_steps=2,
        bootstrap=True,
        seed=7,
        max_length=32,
        logging_steps=4,
        disable_tqdm=True,
    )
    trainer = RewardModelTrainer(model, config, synthetic_pairs(64, seed=3))

    order: list[list[int]] = []
    original = trainer._loss

    def recording_loss(rc, rr, batch, bootstrap):
        if bootstrap:
            idx = trainer.accelerator.gather(batch["index"].to(trainer.accelerator.device))
            order.append(sorted(int(i) for i in idx.cpu()))
        return original(rc, rr, batch, bootstrap)

    trainer._loss = recording_loss  # type: ignore[method-assign]
    result = trainer.train()
    preds = trainer.predict(synthetic_pairs(32, seed=11))  # Predictions, gathered in dataset order
    margins = preds.margins.tolist()
    if trainer.accelerator.is_main_process:
        from safetensors.torch import save_file

        os.makedirs(out, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(out, "final.safetensors"))
        with open(os.path.join(out, "data_order.json"), "w") as f:
            json.dump(
                {
                    "order": order,
                    "num_processes": trainer.accelerator.num_processes,
                    "global_step": result.global_step,
                    "losses": [e["loss"] for e in trainer.log_history if "loss" in e],
                    "margins": margins,
                },
                f,
            )
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()

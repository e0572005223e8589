"""Shared helpers for the trainer and CLI tests: synthetic pairs over a word vocabulary, a minimal model.

The tiny BERT over that vocabulary (``make_tiny_bert``) lives with the other test backbones in
``_tiny_models``; it is re-exported here for the tests that import it from this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random

import torch
from _tiny_models import FILLER, NEGATIVE, POSITIVE, VOCAB, make_tiny_bert  # noqa: F401  (re-exported)
from safetensors.torch import load_file, save_file
from torch import nn


def synthetic_pairs(n: int, seed: int = 0, noise: float = 0.0) -> list[dict]:
    """Pairs whose chosen side holds more positive than negative words (a clear signal).

    ``noise`` is the fraction of pairs whose sides are swapped (label noise).
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 4)))

        def side(good: bool) -> str:
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
            n_pos, n_neg = (rng.randint(1, 3), rng.randint(0, 1)) if good else (
                rng.randint(0, 1),
                rng.randint(1, 3),
            )
            words += [rng.choice(POSITIVE) for _ in range(n_pos)]
            words += [rng.choice(NEGATIVE) for _ in range(n_neg)]
            rng.shuffle(words)
            return " ".join(words)

        chosen, rejected = side(True), side(False)
        if rng.random() < noise:
            chosen, rejected = rejected, chosen
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "index": i})
    return out


def synthetic_dataset(n: int, seed: int = 0, noise: float = 0.0):
    """The same pairs as a :class:`auq.data.PreferenceDataset`."""
    from auq.data import PreferenceDataset

    pairs = synthetic_pairs(n, seed=seed, noise=noise)
    return PreferenceDataset.from_dict(
        {k: [p[k] for p in pairs] for k in ("prompt", "chosen", "rejected")}
    )


@dataclasses.dataclass
class TinyEnsembleConfig:
    backbone: str
    n_members: int = 3
    freeze_trunk: bool = False
    seed: int = 0


class TinyEnsemble(nn.Module):
    """Minimal model satisfying the auq reward-model contract: trunk + mean pooling + K linear heads."""

    def __init__(self, config: TinyEnsembleConfig):
        from transformers import AutoModel, AutoTokenizer

        super().__init__()
        self.config = config
        self.trunk = AutoModel.from_pretrained(config.backbone)
        self.tokenizer = AutoTokenizer.from_pretrained(config.backbone)
        gen = torch.Generator().manual_seed(config.seed)
        hidden = self.trunk.config.hidden_size
        self.heads = nn.Linear(hidden, config.n_members)
        with torch.no_grad():
            self.heads.weight.copy_(torch.randn(self.heads.weight.shape, generator=gen) * 0.3)
            self.heads.bias.zero_()
        self.n_members = config.n_members
        self.trunk_frozen = config.freeze_trunk
        if config.freeze_trunk:
            self.trunk.requires_grad_(False)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.heads(features)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.encode(input_ids, attention_mask))

    def save_pretrained(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(self.config), f)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(path, "model.safetensors"))

    @classmethod
    def from_pretrained(cls, path: str) -> TinyEnsemble:
        with open(os.path.join(path, "config.json")) as f:
            model = cls(TinyEnsembleConfig(**json.load(f)))
        model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
        return model


def flat_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().float() for k, v in model.state_dict().items()}

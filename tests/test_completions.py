"""Texts -> member rewards has one home (auq.models._completions); the RL reward functions share it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_models import make_tiny_backbone

from auq.data import PreferenceCollator
from auq.models import RewardEnsemble, encode_dataset
from auq.models._completions import completion_collator, score_completions

PROMPTS = ["Human: hi. Assistant:", "Human: bake bread? Assistant:", ""]
COMPLETIONS = [" hello there", " mix flour and water", " the quick brown fox jumps"]


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    path = make_tiny_backbone(tmp_path_factory.mktemp("bb") / "bert", "bert", hidden_dropout=0.0)
    return RewardEnsemble.from_backbone(path, kind="independent", n_members=3, seed=0)


def test_rewards_and_features_equal_the_model_and_encode_dataset(ensemble):
    ensemble.train()
    collator = completion_collator(ensemble, ensemble.tokenizer)
    r, f = score_completions(ensemble, collator, PROMPTS, COMPLETIONS, batch_size=2, device="cpu", features=True)
    assert ensemble.training  # the training flag is restored
    assert r.shape == (3, 3) and f.shape == (3, ensemble.config.hidden_size)
    assert r.dtype == f.dtype == np.float64
    # reference: the model's own forward on the collated chosen side, in eval mode
    batch = PreferenceCollator(ensemble.tokenizer)(
        [{"prompt": p, "chosen": c, "rejected": c} for p, c in zip(PROMPTS, COMPLETIONS)]
    )
    ensemble.eval()
    with torch.no_grad():
        ref = ensemble(batch["input_ids_chosen"], batch["attention_mask_chosen"]).double().numpy()
    np.testing.assert_allclose(r, ref, rtol=1e-5, atol=1e-6)
    assert r.std(1).min() > 0  # independent members differ
    # per-member features averaged, as encode_dataset does
    fc, _ = encode_dataset(
        ensemble, [{"prompt": p, "chosen": c, "rejected": c} for p, c in zip(PROMPTS, COMPLETIONS)],
        batch_size=3, device="cpu", progress=False,
    )
    np.testing.assert_allclose(f, fc, rtol=1e-5, atol=1e-6)
    # one mode at a time gives the same numbers; batch size does not matter
    r_only, none = score_completions(ensemble, collator, PROMPTS, COMPLETIONS, batch_size=1, device="cpu")
    none2, f_only = score_completions(
        ensemble, collator, PROMPTS, COMPLETIONS, batch_size=3, device="cpu", rewards=False, features=True
    )
    assert none is None and none2 is None
    np.testing.assert_allclose(r_only, r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f_only, f, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="same length"):
        score_completions(ensemble, collator, PROMPTS, COMPLETIONS[:2], batch_size=2, device="cpu")


def test_the_rl_reward_functions_agree(ensemble):
    from auq.training.best_of_n import ensemble_reward_fn

    ensemble.eval()
    via_best_of_n = ensemble_reward_fn(ensemble, batch_size=2)(PROMPTS, COMPLETIONS)
    collator = completion_collator(ensemble, ensemble.tokenizer)
    direct, _ = score_completions(ensemble, collator, PROMPTS, COMPLETIONS, batch_size=3, device="cpu")
    np.testing.assert_allclose(via_best_of_n, direct, rtol=1e-5, atol=1e-6)
    pytest.importorskip("trl")
    from auq.integrations.trl import UncertaintyPenalizedReward
    from auq.monitor._hooks import response_features

    fn = UncertaintyPenalizedReward(ensemble, method="mean", center=False)
    fn(PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(fn.last_member_rewards, direct, rtol=1e-5, atol=1e-6)
    _, feats = score_completions(
        ensemble, collator, PROMPTS, COMPLETIONS, batch_size=3, device="cpu", rewards=False, features=True
    )
    np.testing.assert_allclose(response_features(ensemble, PROMPTS, COMPLETIONS), feats, rtol=1e-5, atol=1e-6)


def test_completion_collator_uses_the_models_training_length(ensemble):
    assert completion_collator(ensemble, ensemble.tokenizer, 16).max_length == 16

    class Plain(torch.nn.Module):  # no make_collator: a PreferenceCollator, default length 512
        pass

    c = completion_collator(Plain(), ensemble.tokenizer)
    assert isinstance(c, PreferenceCollator) and c.max_length == 512

"""The curated public API of auq.training and auq.models: documented user-facing names only.

Building blocks stay importable from the package (old code keeps working) but are not in
``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

CURATED = ("auq.training", "auq.models")

#: internals that must not be advertised in ``__all__``
INTERNAL = {
    "auq.training": {
        "whiten", "masked_mean", "dpo_logits", "sequence_logps", "CausalLMPreferenceCollator",
        "Rollout", "rloo_advantages", "bootstrap_counts", "losses",
    },
    "auq.models": {"default_device", "pool_hidden_states"},
}

#: names importable from the package before ``__all__`` was curated: they must still import
FORMER = {
    "auq.training": {
        "RewardModelTrainer", "RewardTrainerConfig", "TrainResult", "bootstrap_counts",
        "load_checkpoint_state", "HEADS_RECIPE", "DatasetSubset", "CausalLMPreferenceCollator",
        "UncertaintyDPOConfig", "UncertaintyDPOTrainer", "attach_uncertainty", "sequence_logps",
        "OnlineConfig", "OnlineTrainer", "OnlineHistory", "Rollout", "BestOfNResult", "best_of_n",
        "best_of_n_kl", "ensemble_reward_fn", "rloo_advantages", "losses", "bradley_terry_loss",
        "dpo_logits", "dpo_loss", "dpo_implicit_rewards", "ImplicitRewards", "robust_dpo_loss",
        "ipo_loss", "flip_rate_from_uncertainty", "uncertainty_weights", "penalized_reward",
        "PolicyLossOutput", "ppo_loss", "value_loss", "kl_penalty", "compute_gae", "whiten",
        "masked_mean",
    },
    "auq.models": {"default_device", "pool_hidden_states", "resolve_pooling"},
}


def _own_docstring(obj) -> str | None:
    """The object's own docstring; None for an inherited or generated one (plain dataclass)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        if doc and doc.startswith(f"{obj.__name__}("):  # dataclass / NamedTuple signature only
            return None
        return doc
    if inspect.isroutine(obj) or inspect.ismodule(obj):
        return obj.__doc__
    return None


def _documented_constant(package: str, name: str) -> bool:
    """A constant is documented by a ``#:`` comment right above its assignment in its module."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, package + "."):
        lines = inspect.getsource(importlib.import_module(info.name)).splitlines()
        for i, line in enumerate(lines):
            if line.startswith((f"{name} =", f"{name}:")) and i and lines[i - 1].startswith("#:"):
                return True
    return False


@pytest.mark.parametrize("package", CURATED)
def test_every_exported_name_is_documented_and_no_internal_is_exported(package):
    mod = importlib.import_module(package)
    assert len(mod.__all__) == len(set(mod.__all__)), "duplicate names in __all__"
    undocumented = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
            doc = _own_docstring(obj)
            if not (doc and doc.strip()):
                undocumented.append(name)
        elif not _documented_constant(package, name):
            undocumented.append(name)
    assert undocumented == []
    assert INTERNAL[package] & set(mod.__all__) == set()


def test_training_functions_show_an_example():
    mod = importlib.import_module("auq.training")
    missing = [n for n in mod.__all__ if inspect.isfunction(getattr(mod, n))
               and "Examples" not in inspect.getdoc(getattr(mod, n))]
    assert missing == []


@pytest.mark.parametrize("package", CURATED)
def test_former_names_still_import(package):
    mod = importlib.import_module(package)
    missing = sorted(n for n in FORMER[package] if not hasattr(mod, n))
    assert missing == []
    ns: dict = {}
    exec(f"from {package} import *", ns)  # a star import gives exactly __all__
    assert {n for n in ns if not n.startswith("__")} == set(mod.__all__)

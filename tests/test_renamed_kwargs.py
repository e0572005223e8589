"""Renamed keyword arguments: the one deprecation helper (auq._checks.renamed_kwargs) and every rename."""

import inspect
import warnings

import numpy as np
import pytest
import torch

from auq._checks import renamed_kwarg, renamed_kwargs
from auq.conformal import conformal_weights
from auq.training import (
    dpo_loss,
    flip_rate_from_uncertainty,
    ipo_loss,
    kl_penalty,
    robust_dpo_loss,
    uncertainty_weights,
)


@renamed_kwargs(tau="temperature", scheme="method")
def _soften(x, method="exp", *, temperature=1.0):
    return (method, x / temperature)


class TestHelper:
    def test_new_names_pass_through_silently(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _soften(2.0, "linear", temperature=4.0) == ("linear", 0.5)
            assert _soften(2.0) == ("exp", 2.0)

    def test_old_name_warns_naming_the_new_one_and_points_at_the_caller(self):
        with pytest.warns(FutureWarning, match=r"_soften\(\): tau= is deprecated .* use temperature= instead") as rec:
            assert _soften(2.0, tau=4.0) == ("exp", 0.5)
        assert rec[0].filename == __file__  # the warning blames the caller, not the wrapper
        with pytest.warns(FutureWarning, match="use method= instead"):
            assert _soften(2.0, scheme="linear") == ("linear", 2.0)

    def test_both_names_is_a_type_error_naming_both(self):
        msg = r"got both tau= \(deprecated\) and temperature=; pass only temperature="
        with pytest.raises(TypeError, match=msg):
            _soften(2.0, tau=4.0, temperature=4.0)
        # the new name given by position counts as given
        with pytest.raises(TypeError, match=r"got both scheme= \(deprecated\) and method="):
            _soften(2.0, "exp", scheme="linear")

    def test_signature_shows_only_the_new_names(self):
        assert list(inspect.signature(_soften).parameters) == ["x", "method", "temperature"]
        assert _soften.__renamed_kwargs__ == {"tau": "temperature", "scheme": "method"}

    def test_unknown_keywords_still_fail_as_usual(self):
        with pytest.raises(TypeError, match="unexpected keyword argument 'tua'"):
            _soften(2.0, tua=4.0)

    def test_decorating_a_function_without_the_new_name_is_refused(self):
        with pytest.raises(ValueError, match="must take temperature="):
            renamed_kwargs(tau="temperature")(lambda x, tau=1.0: x)

    def test_function_form_for_configs(self):
        kw = {"num_epochs": 3}
        with pytest.warns(FutureWarning, match=r"Cfg: num_epochs= is deprecated"):
            renamed_kwarg(kw, "num_epochs", "num_train_epochs", where="Cfg", stacklevel=2)
        assert kw == {"num_train_epochs": 3}
        kw = {"lr": 1.0}
        renamed_kwarg(kw, "num_epochs", "num_train_epochs", where="Cfg")  # absent: untouched, no warning
        assert kw == {"lr": 1.0}
        with pytest.raises(TypeError, match="Cfg got both num_epochs="):
            renamed_kwarg({"num_epochs": 3}, "num_epochs", "num_train_epochs", where="Cfg", new_given=True)


# ------------------------------------------------------------------------------------------
# every rename: the new name works, the old one warns and gives the identical value, both fail
# ------------------------------------------------------------------------------------------

def _logps():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(5, generator=g, dtype=torch.float64) for _ in range(4))


def _conformal_sets():
    from auq.conformal import PairSetPredictor

    return PairSetPredictor(alpha=0.25).fit([0.9, 0.8, 0.3, 0.6, 0.7], [1, 1, 1, 0, 1])


_W = torch.tensor([0.2, 1.0, 3.0, 0.5, 0.0], dtype=torch.float64)
_U = np.array([0.05, 0.3, 0.9, 0.4, 0.2])

# (function, positional args, keyword args besides the renamed one, old name, new name, value);
# each value differs from the default, so a rename that silently dropped it would change the result
RENAMES = [
    ("uncertainty_weights", lambda: uncertainty_weights, lambda: (_U,), {"normalize": None},
     "scheme", "method", "linear"),
    ("uncertainty_weights", lambda: uncertainty_weights, lambda: (_U,), {"normalize": None},
     "tau", "temperature", 0.25),
    ("flip_rate_from_uncertainty", lambda: flip_rate_from_uncertainty, lambda: (_U,), {"max_rate": 0.49},
     "kind", "input", "entropy"),
    ("kl_penalty", lambda: kl_penalty, lambda: _logps()[:2], {}, "kind", "estimator", "k3"),
    ("dpo_loss", lambda: dpo_loss, _logps, {"beta": 0.3, "weights": _W}, "normalize",
     "weight_normalization", "n"),
    ("robust_dpo_loss", lambda: robust_dpo_loss, _logps, {"beta": 0.3, "epsilon": 0.2, "weights": _W},
     "normalize", "weight_normalization", "n"),
    ("ipo_loss", lambda: ipo_loss, _logps, {"weights": _W}, "normalize", "weight_normalization", "n"),
    ("ipo_loss", lambda: ipo_loss, _logps, {}, "tau", "beta", 0.7),
    ("conformal_weights", lambda: conformal_weights, lambda: (_conformal_sets(), [0.75, 0.6, 0.95],
     [1.0, 0.0, 1.0]), {"normalize": None}, "scheme", "method", "set_size"),
]


def _same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "get_fn, get_args, extra, old, new, value", [r[1:] for r in RENAMES], ids=[f"{r[0]}-{r[4]}-to-{r[5]}" for r in RENAMES]
)
def test_rename(get_fn, get_args, extra, old, new, value):
    fn, args = get_fn(), get_args()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name never warns
        got_new = fn(*args, **extra, **{new: value})
        default = fn(*args, **extra)
    # the value reaches the formula: it changes the result from the default
    assert not np.allclose(np.asarray(got_new), np.asarray(default))
    with pytest.warns(FutureWarning, match=rf"{fn.__name__}\(\): {old}= is deprecated .* use {new}= instead"):
        got_old = fn(*args, **extra, **{old: value})
    _same(got_old, got_new)
    with pytest.raises(TypeError, match=rf"got both {old}= \(deprecated\) and {new}="):
        fn(*args, **extra, **{old: value, new: value})
    assert new in inspect.signature(fn).parameters and old not in inspect.signature(fn).parameters


def test_positional_calls_keep_working():
    # parameters that were positional stay at their place
    u = _U
    _same(uncertainty_weights(u, "rank", normalize=None), uncertainty_weights(u, method="rank", normalize=None))
    lp, ref = _logps()[:2]
    _same(kl_penalty(lp, ref, "k2"), 0.5 * (lp - ref) ** 2)
    xs = _logps()
    _same(ipo_loss(*xs, 0.7), ipo_loss(*xs, beta=0.7))
    args = (*xs, 0.3, _W, None, "mean", "n")  # dpo_loss(..., beta, weights, targets, reduction, weight_normalization)
    _same(dpo_loss(*args), dpo_loss(*xs, beta=0.3, weights=_W, weight_normalization="n"))
    with pytest.raises(TypeError, match="got both normalize="):
        dpo_loss(*args, normalize="n")

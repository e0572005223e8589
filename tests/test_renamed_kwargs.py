"""Renamed keyword arguments: the one deprecation helper (auq._checks.renamed_kwargs) and every rename."""

import inspect
import warnings

import pytest

from auq._checks import renamed_kwarg, renamed_kwargs


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

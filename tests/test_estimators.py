"""Tests for auq.estimators: decomposition, reward statistics, label uncertainty."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate, special, stats

from auq.estimators import (
    Decomposition,
    PairRewardStats,
    RewardStats,
    decompose,
    label_uncertainty,
    pair_reward_stats,
    response_reward_stats,
    vote_fractions,
)

LN2 = math.log(2.0)


def H(p: float) -> float:
    """Binary entropy in nats, plain float reference."""
    if p in (0.0, 1.0):
        return 0.0
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def naive_decomposition(m: np.ndarray) -> dict[str, np.ndarray]:
    """Direct probability-space reference for moderate margins (float64)."""
    p = special.expit(m)
    pbar = p.mean(axis=1)

    def ent(x):
        return -(special.xlogy(x, x) + special.xlogy(1 - x, 1 - x))

    total = ent(pbar)
    aleatoric = ent(p).mean(axis=1)
    return {
        "prob": pbar,
        "total": total,
        "aleatoric": aleatoric,
        "epistemic": total - aleatoric,
        "margin_mean": m.mean(axis=1),
        "margin_std": m.std(axis=1),
    }


# ---------------------------------------------------------------------------------------------
# decompose: hand-computed cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a", [0.5, 2.0, 7.0])
def test_two_opposite_members_hand_computed(a):
    d = decompose(np.array([[a, -a]]))
    assert isinstance(d, Decomposition)
    assert d.prob[0] == pytest.approx(0.5, abs=1e-15)
    assert d.total[0] == pytest.approx(LN2, abs=1e-15)
    assert d.aleatoric[0] == pytest.approx(H(sigmoid(a)), abs=1e-14)
    assert d.epistemic[0] == pytest.approx(LN2 - H(sigmoid(a)), abs=1e-14)
    assert d.margin_mean[0] == pytest.approx(0.0, abs=1e-15)
    assert d.margin_std[0] == pytest.approx(a, rel=1e-15)  # population std of {a, -a}


def test_hand_computed_three_members():
    m = np.array([[0.0, 1.0, 3.0]])
    p = [sigmoid(x) for x in m[0]]
    pbar = sum(p) / 3
    d = decompose(m)
    assert d.prob[0] == pytest.approx(pbar, abs=1e-15)
    assert d.total[0] == pytest.approx(H(pbar), abs=1e-14)
    assert d.aleatoric[0] == pytest.approx(sum(H(x) for x in p) / 3, abs=1e-14)
    assert d.epistemic[0] == pytest.approx(H(pbar) - sum(H(x) for x in p) / 3, abs=1e-14)
    assert d.margin_mean[0] == pytest.approx(4 / 3, abs=1e-15)
    assert d.margin_std[0] == pytest.approx(
        math.sqrt(((0 - 4 / 3) ** 2 + (1 - 4 / 3) ** 2 + (3 - 4 / 3) ** 2) / 3)
    )


def test_zero_margin_is_log2_all_aleatoric():
    d = decompose([[0.0, 0.0, 0.0]])
    assert d.prob[0] == 0.5
    assert d.total[0] == pytest.approx(LN2, abs=1e-15)
    assert d.aleatoric[0] == pytest.approx(LN2, abs=1e-15)
    assert d.epistemic[0] == pytest.approx(0.0, abs=1e-15)


def test_bits_are_nats_over_ln2():
    m = np.random.default_rng(0).normal(0, 2, size=(20, 5))
    nats = decompose(m)
    bits = decompose(m, unit="bits")
    assert bits.unit == "bits" and nats.unit == "nats"
    for f in ("total", "aleatoric", "epistemic"):
        np.testing.assert_allclose(getattr(bits, f), getattr(nats, f) / LN2, rtol=1e-14, atol=0)
    for f in ("prob", "margin_mean", "margin_std"):  # not entropies: unchanged
        np.testing.assert_array_equal(getattr(bits, f), getattr(nats, f))
    assert decompose([[3.0, -3.0]], unit="bits").total[0] == pytest.approx(1.0, abs=1e-15)


def test_matches_probability_space_reference():
    m = np.random.default_rng(1).normal(0.5, 3.0, size=(200, 4))
    d = decompose(m)
    ref = naive_decomposition(m)
    for f, v in ref.items():
        np.testing.assert_allclose(getattr(d, f), v, rtol=0, atol=1e-12, err_msg=f)


def test_two_argument_form_equals_margins():
    rng = np.random.default_rng(2)
    rc, rr = rng.normal(size=(30, 6)), rng.normal(size=(30, 6))
    a, b = decompose(rc, rr), decompose(rc - rr)
    for f in Decomposition._ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_one_dimensional_input_is_one_member():
    m = np.array([-2.0, 0.0, 5.0])
    d = decompose(m)
    assert d.n_members == 1 and len(d) == 3
    np.testing.assert_allclose(d.prob, special.expit(m), rtol=1e-15)
    np.testing.assert_array_equal(d.epistemic, np.zeros(3))
    np.testing.assert_array_equal(d.margin_std, np.zeros(3))
    np.testing.assert_array_equal(d.total, d.aleatoric)
    np.testing.assert_allclose(d.total, [H(sigmoid(x)) for x in m], atol=1e-15)


def test_to_pandas_and_len():
    d = decompose(np.array([[1.0, 2.0], [-1.0, 0.5], [0.0, 0.0]]))
    df = d.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == [
        "prob",
        "total",
        "aleatoric",
        "epistemic",
        "margin_mean",
        "margin_std",
    ]
    assert len(df) == len(d) == 3
    np.testing.assert_array_equal(df["epistemic"].to_numpy(), d.epistemic)
    # torch fields (with grad) convert too
    t = torch.tensor([[1.0, 2.0]], requires_grad=True)
    dft = decompose(t).to_pandas()
    assert dft["margin_mean"].iloc[0] == pytest.approx(1.5)


def test_result_is_frozen():
    d = decompose([[1.0, 2.0]])
    with pytest.raises(AttributeError):
        d.prob = None  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# decompose: properties
# ---------------------------------------------------------------------------------------------

margin_arrays = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
    elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=150, deadline=None)
@given(margin_arrays)
def test_property_epistemic_nonnegative_and_sums(m):
    d = decompose(m)
    assert (d.epistemic >= 0).all()
    assert (d.aleatoric >= 0).all() and (d.total <= LN2 + 1e-15).all()
    np.testing.assert_allclose(d.total, d.aleatoric + d.epistemic, rtol=0, atol=1e-12)
    assert ((d.prob >= 0) & (d.prob <= 1)).all()


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-1e4, 1e4)))
def test_property_one_member_exact_zero(m):
    for x in (m, m[:, None]):
        d = decompose(x)
        assert (d.epistemic == 0).all()
        assert (d.margin_std == 0).all()
        np.testing.assert_array_equal(d.total, d.aleatoric)


@settings(max_examples=150, deadline=None)
@given(margin_arrays)
def test_property_swap_chosen_rejected(m):
    rc = m
    rr = np.zeros_like(m)
    a, b = decompose(rc, rr), decompose(rr, rc)
    np.testing.assert_allclose(b.prob, 1 - a.prob, rtol=0, atol=1e-12)
    for f in ("total", "aleatoric", "epistemic", "margin_std"):
        np.testing.assert_allclose(getattr(b, f), getattr(a, f), rtol=0, atol=1e-13, err_msg=f)
    np.testing.assert_array_equal(b.margin_mean, -a.margin_mean)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
        elements=st.sampled_from([-1e4, 1e4, -1e4 + 0.5, 0.0, 3.0]),
    ),
    st.sampled_from(["numpy64", "numpy32", "torch64", "torch32"]),
)
def test_property_extreme_margins_finite(m, kind):
    x = {
        "numpy64": m,
        "numpy32": m.astype(np.float32),
        "torch64": torch.tensor(m, dtype=torch.float64),
        "torch32": torch.tensor(m, dtype=torch.float32),
    }[kind]
    d = decompose(x)
    for f in Decomposition._ARRAY_FIELDS:
        v = (
            np.asarray(getattr(d, f))
            if not torch.is_tensor(getattr(d, f))
            else getattr(d, f).numpy()
        )
        assert np.isfinite(v).all(), f
    ep = d.epistemic if not torch.is_tensor(d.epistemic) else d.epistemic.numpy()
    assert (ep >= 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_margins_exact_values_and_gradient(dtype):
    m = torch.tensor([[1e4, -1e4], [1e4, 1e4], [-1e4, -1e4]], dtype=dtype, requires_grad=True)
    d = decompose(m)
    torch.testing.assert_close(d.prob, torch.tensor([0.5, 1.0, 0.0], dtype=dtype))
    torch.testing.assert_close(d.total, torch.tensor([LN2, 0.0, 0.0], dtype=dtype))
    torch.testing.assert_close(d.aleatoric, torch.zeros(3, dtype=dtype))
    torch.testing.assert_close(d.epistemic, torch.tensor([LN2, 0.0, 0.0], dtype=dtype))
    (d.total + d.aleatoric + d.epistemic + d.prob + d.margin_std).sum().backward()
    assert torch.isfinite(m.grad).all()
    # numpy at the same margins
    dn = decompose(m.detach().numpy())
    np.testing.assert_allclose(dn.epistemic, [LN2, 0.0, 0.0], atol=1e-7)


# ---------------------------------------------------------------------------------------------
# decompose: ground-truth recovery
# ---------------------------------------------------------------------------------------------


def analytical_decomposition(p0: float, s: float) -> tuple[float, float, float, float]:
    """Expected (prob, total, aleatoric, epistemic) for member logits z ~ N(logit(p0), s^2)."""
    mu = special.logit(p0)
    pdf = stats.norm(mu, s).pdf
    lo, hi = mu - 12 * s, mu + 12 * s
    pbar = integrate.quad(lambda z: special.expit(z) * pdf(z), lo, hi, epsabs=1e-12)[0]
    alea = integrate.quad(lambda z: H(special.expit(z)) * pdf(z), lo, hi, epsabs=1e-12)[0]
    total = H(pbar)
    return pbar, total, alea, total - alea


def test_ground_truth_recovery_normal_members():
    settings_ = [(0.5, 1.0), (0.8, 0.5), (0.1, 2.0), (0.95, 3.0)]
    k = 1_000_000
    rng = np.random.default_rng(12345)
    mu = special.logit(np.array([p for p, _ in settings_]))[:, None]
    sd = np.array([s for _, s in settings_])[:, None]
    z = mu + sd * rng.standard_normal((len(settings_), k))
    d = decompose(z)
    for i, (p0, s) in enumerate(settings_):
        pbar, total, alea, epi = analytical_decomposition(p0, s)
        assert d.prob[i] == pytest.approx(pbar, abs=1e-3)
        assert d.total[i] == pytest.approx(total, abs=1e-3)
        assert d.aleatoric[i] == pytest.approx(alea, abs=1e-3)
        assert d.epistemic[i] == pytest.approx(epi, abs=1e-3)
        assert d.margin_std[i] == pytest.approx(s, rel=5e-3)
        assert epi > 0.01  # a non-trivial epistemic term is being recovered
    # members of spread 0 around p0: no epistemic uncertainty, aleatoric = H(p0)
    d0 = decompose(np.full((1, 50), special.logit(0.8)))
    assert d0.epistemic[0] == pytest.approx(0.0, abs=1e-15)
    assert d0.aleatoric[0] == pytest.approx(H(0.8), abs=1e-14)


# ---------------------------------------------------------------------------------------------
# decompose: types, devices, gradients
# ---------------------------------------------------------------------------------------------


def test_numpy_and_list_in_numpy_float64_out():
    for x in (
        [[1.0, 2.0], [0.0, -1.0]],
        np.array([[1, 2], [0, -1]], dtype=np.int64),
        np.array([[1.0, 2.0], [0.0, -1.0]], dtype=np.float32),
    ):
        d = decompose(x)
        for f in Decomposition._ARRAY_FIELDS:
            v = getattr(d, f)
            assert isinstance(v, np.ndarray) and v.dtype == np.float64 and v.shape == (2,)
    np.testing.assert_allclose(decompose([[1.0, 2.0]]).margin_mean, [1.5])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_torch_in_torch_out_same_dtype(dtype):
    t = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=dtype)
    d = decompose(t)
    ref = decompose(t.to(torch.float64).numpy())
    for f in Decomposition._ARRAY_FIELDS:
        v = getattr(d, f)
        assert torch.is_tensor(v) and v.dtype == dtype and v.device == t.device
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
        np.testing.assert_allclose(v.to(torch.float64).numpy(), getattr(ref, f), atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cuda_stays_on_device():
    t = torch.randn(8, 4, device="cuda")
    d = decompose(t)
    assert all(getattr(d, f).device == t.device for f in Decomposition._ARRAY_FIELDS)
    np.testing.assert_allclose(
        d.epistemic.cpu().numpy(), decompose(t.cpu()).epistemic.numpy(), atol=1e-6
    )


def test_mixed_numpy_and_torch_gives_torch():
    rc = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    d = decompose(rc, np.zeros((1, 2)))
    assert torch.is_tensor(d.prob) and d.prob.dtype == torch.float64
    d2 = decompose(np.ones((1, 2)), torch.zeros(1, 2))
    assert torch.is_tensor(d2.prob) and d2.prob.dtype == torch.float32


def test_gradcheck_float64():
    torch.manual_seed(0)
    rc = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    rr = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def f(a, b):
        d = decompose(a, b)
        return d.prob, d.total, d.aleatoric, d.epistemic, d.margin_mean, d.margin_std

    assert torch.autograd.gradcheck(f, (rc, rr), eps=1e-6, atol=1e-7)


def test_gradient_flows_through_epistemic():
    m = torch.tensor([[1.0, -1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    decompose(m).epistemic.sum().backward()
    assert torch.isfinite(m.grad).all() and m.grad.abs().sum() > 0
    # moving the members apart increases the epistemic term
    assert m.grad[0, 0] > 0 and m.grad[0, 1] < 0


def test_identical_members_have_zero_std_and_finite_gradient():
    m = torch.full((2, 4), 1.5, dtype=torch.float64, requires_grad=True)
    d = decompose(m)
    assert (d.margin_std == 0).all()
    d.margin_std.sum().backward()
    assert torch.isfinite(m.grad).all()


# ---------------------------------------------------------------------------------------------
# decompose: bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([[1.0, np.nan]],), {}, "margins contains 1 NaN"),
        (([[1.0, np.inf]],), {}, "margins contains 1 infinite"),
        ((torch.tensor([[1.0, float("nan")]]),), {}, "margins contains 1 NaN"),
        ((np.zeros((0, 3)),), {}, "margins is empty"),
        (([],), {}, "margins is empty"),
        ((np.zeros((2, 2, 2)),), {}, "margins must be 1-D or 2-D"),
        ((5.0,), {}, "margins must be 1-D or 2-D"),
        (
            (np.zeros((3, 2)), np.zeros((3, 3))),
            {},
            "rewards_chosen and rewards_rejected must have the same shape",
        ),
        ((np.zeros((3, 2)), np.full((3, 2), np.nan)), {}, "rewards_rejected contains"),
        ((np.zeros((3, 2)),), {"unit": "dits"}, "unit must be one of"),
    ],
)
def test_decompose_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        decompose(*args, **kwargs)


def test_decompose_bad_type():
    with pytest.raises(TypeError, match="margins"):
        decompose("abc")
    with pytest.raises(TypeError, match="margins is required"):
        decompose(None)


# ---------------------------------------------------------------------------------------------
# reward statistics
# ---------------------------------------------------------------------------------------------


def test_response_reward_stats_hand_computed():
    r = np.array([[1.0, 4.0], [3.0, 2.0], [5.0, 6.0]])
    s = response_reward_stats(r)
    assert isinstance(s, RewardStats) and len(s) == 3
    c = r - r.mean(axis=0)  # member means 3 and 4
    np.testing.assert_allclose(s.mean, c.mean(axis=1), atol=1e-15)
    np.testing.assert_allclose(s.std, c.std(axis=1), atol=1e-15)
    np.testing.assert_allclose(s.std, [1.0, 1.0, 0.0], atol=1e-15)  # [-2,0], [0,-2], [2,2]
    mean, std = s  # unpacks
    assert list(s.to_pandas().columns) == ["mean", "std"]
    u = response_reward_stats(r, center=False)
    np.testing.assert_allclose(u.mean, [2.5, 2.5, 5.5])
    np.testing.assert_allclose(u.std, [1.5, 0.5, 0.5])


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=8),
        elements=st.floats(-10, 10),
    ),
    st.data(),
)
def test_property_centring_invariant_to_member_offsets(r, data):
    offsets = np.array(
        data.draw(st.lists(st.floats(-1e3, 1e3), min_size=r.shape[1], max_size=r.shape[1]))
    )
    a = response_reward_stats(r)
    b = response_reward_stats(r + offsets[None, :])
    np.testing.assert_allclose(b.mean, a.mean, atol=1e-9)
    np.testing.assert_allclose(b.std, a.std, atol=1e-9)


def test_uncentred_std_would_be_wrong():
    # Two members that agree on every comparison (same rewards up to a constant of 100):
    # they express identical preferences, so their disagreement is 0.
    base = np.array([0.0, 1.0, 2.0, -1.0])
    r = np.stack([base, base + 100.0], axis=1)
    np.testing.assert_allclose(response_reward_stats(r).std, 0.0, atol=1e-12)
    np.testing.assert_allclose(response_reward_stats(r, center=False).std, 50.0)
    # and the margins (what the preference depends on) agree exactly
    assert decompose(r[:2], r[2:]).margin_std.max() == 0.0


def test_response_reward_stats_torch_and_one_member():
    t = torch.tensor([[1.0, 3.0], [2.0, 0.0], [3.0, 3.0]], dtype=torch.float64, requires_grad=True)
    s = response_reward_stats(t)
    assert torch.is_tensor(s.std) and s.std.dtype == torch.float64
    np.testing.assert_allclose(
        s.std.detach().numpy(), response_reward_stats(t.detach().numpy()).std
    )
    s.std.sum().backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    one = response_reward_stats([1.0, 2.0, 6.0])
    np.testing.assert_allclose(one.mean, [-2.0, -1.0, 3.0])
    np.testing.assert_array_equal(one.std, [0.0, 0.0, 0.0])


def test_pair_reward_stats_centres_over_union():
    rc = np.array([[2.0, 12.0], [4.0, 10.0]])
    rr = np.array([[0.0, 10.0], [2.0, 8.0]])
    s = pair_reward_stats(rc, rr)
    assert isinstance(s, PairRewardStats) and len(s) == 2
    both = np.concatenate([rc, rr])
    c = both - both.mean(axis=0)  # member means 2 and 10
    np.testing.assert_allclose(s.mean_chosen, c[:2].mean(axis=1))
    np.testing.assert_allclose(s.std_chosen, c[:2].std(axis=1))
    np.testing.assert_allclose(s.mean_rejected, c[2:].mean(axis=1))
    np.testing.assert_allclose(s.std_rejected, c[2:].std(axis=1))
    np.testing.assert_allclose(s.mean_chosen, [1.0, 1.0])
    np.testing.assert_allclose(s.std_chosen, [1.0, 1.0])
    np.testing.assert_allclose(s.mean_rejected, [-1.0, -1.0])
    # chosen and rejected are comparable: mean difference equals the mean margin
    np.testing.assert_allclose(s.mean_chosen - s.mean_rejected, decompose(rc, rr).margin_mean)
    # centring each side separately would have erased the chosen/rejected gap
    sep = response_reward_stats(rc).mean - response_reward_stats(rr).mean
    np.testing.assert_allclose(sep, 0.0)
    mc, sc, mr, sr = s
    np.testing.assert_array_equal(mc, s.mean_chosen)
    assert list(s.to_pandas().columns) == [
        "reward_mean_chosen",
        "reward_std_chosen",
        "reward_mean_rejected",
        "reward_std_rejected",
    ]
    # offsets per member leave everything unchanged
    s2 = pair_reward_stats(rc + [5.0, -7.0], rr + [5.0, -7.0])
    for a, b in zip(s, s2):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_pair_reward_stats_torch():
    rc = torch.tensor([[2.0, 12.0]], dtype=torch.float32)
    s = pair_reward_stats(rc, torch.tensor([[0.0, 10.0]]))
    assert all(torch.is_tensor(x) and x.dtype == torch.float32 for x in s)
    assert s.mean_chosen.item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: response_reward_stats([[1.0, np.nan], [0.0, 0.0]]), "rewards contains 1 NaN"),
        (lambda: response_reward_stats(np.zeros((0, 2))), "rewards is empty"),
        (lambda: response_reward_stats(np.zeros((2, 2, 2))), "rewards must be 1-D or 2-D"),
        (lambda: response_reward_stats([[1.0, 2.0]]), "rewards must hold at least 2 responses"),
        (
            lambda: pair_reward_stats(np.zeros((2, 2)), np.zeros((3, 2))),
            "rewards_chosen and rewards_rejected must have the same shape",
        ),
        (
            lambda: pair_reward_stats(np.zeros((2, 2)), np.full((2, 2), np.inf)),
            "rewards_rejected contains",
        ),
    ],
)
def test_reward_stats_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_reward_stats_center_must_be_bool():
    with pytest.raises(TypeError, match="center"):
        response_reward_stats([[1.0], [2.0]], center="yes")


def test_single_response_without_centring_is_allowed():
    s = response_reward_stats([[1.0, 3.0]], center=False)
    np.testing.assert_allclose(s.mean, [2.0])
    np.testing.assert_allclose(s.std, [1.0])


# ---------------------------------------------------------------------------------------------
# label uncertainty
# ---------------------------------------------------------------------------------------------


def test_label_uncertainty_counts_hand_computed():
    votes = np.array([[2, 2], [4, 0], [0, 3], [3, 1], [1, 0]])
    h = label_uncertainty(votes)
    np.testing.assert_allclose(h, [LN2, 0.0, 0.0, H(0.75), 0.0], atol=1e-15)
    assert isinstance(h, np.ndarray) and h.dtype == np.float64
    assert not np.signbit(h).any()
    np.testing.assert_allclose(label_uncertainty(votes, unit="bits"), h / LN2, rtol=1e-15)
    np.testing.assert_allclose(vote_fractions(votes), [0.5, 1.0, 0.0, 0.75, 1.0])


def test_label_uncertainty_fractions_and_weighted_counts():
    q = [0.5, 0.0, 1.0, 0.25]
    np.testing.assert_allclose(label_uncertainty(q), [LN2, 0.0, 0.0, H(0.25)], atol=1e-15)
    np.testing.assert_allclose(vote_fractions(q), q)
    np.testing.assert_allclose(label_uncertainty([[1.5, 0.5]]), [H(0.75)], atol=1e-15)


def test_label_uncertainty_torch():
    v = torch.tensor([[2, 2], [3, 1]])  # integer tensor -> float32
    h = label_uncertainty(v)
    assert torch.is_tensor(h) and h.dtype == torch.float32
    torch.testing.assert_close(h, torch.tensor([LN2, H(0.75)], dtype=torch.float32))
    q = torch.tensor([0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(
        label_uncertainty(q, unit="bits"), torch.tensor([1.0, H(0.9) / LN2], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    "votes, kwargs, match",
    [
        ([[1, -1]], {}, "votes must be non-negative"),
        ([[1, 1], [0, 0]], {}, "votes has 1 row\\(s\\) with no votes"),
        ([0.5, 1.2], {}, "votes .*must lie in \\[0, 1\\]"),
        ([-0.1, 0.5], {}, "votes .*must lie in \\[0, 1\\]"),
        ([[1, 2, 3]], {}, "votes must be \\[n_pairs, 2\\]"),
        ([[np.nan, 1.0]], {}, "votes contains 1 NaN"),
        (np.zeros((0, 2)), {}, "votes is empty"),
        (np.ones((2, 2, 2)), {}, "votes must be 1-D or 2-D"),
        ([[1, 1]], {"unit": "nat"}, "unit must be one of"),
    ],
)
def test_label_uncertainty_bad_input(votes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        label_uncertainty(votes, **kwargs)
    if "unit" not in kwargs:
        with pytest.raises(ValueError, match=match):
            vote_fractions(votes)

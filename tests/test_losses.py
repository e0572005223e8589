"""Tests for auq.training.losses: identities, hand computations and bad input (no TRL needed).

The agreement of the DPO family with the installed TRL's loss code is in ``test_trl_parity.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _grad_helpers import assert_same, random_logps, value_and_grad

from auq.training.losses import (
    bradley_terry_loss,
    compute_gae,
    dpo_implicit_rewards,
    dpo_logits,
    dpo_loss,
    flip_rate_from_uncertainty,
    ipo_loss,
    kl_penalty,
    masked_mean,
    penalized_reward,
    ppo_loss,
    robust_dpo_loss,
    uncertainty_weights,
    value_loss,
    whiten,
)

# ------------------------------------------------------------------------------------------
# DPO family: identities, weights, targets, stability
# ------------------------------------------------------------------------------------------


def test_unit_weights_and_targets_reduce_to_plain_dpo():
    xs = random_logps(seed=5)
    plain = value_and_grad(lambda *a: dpo_loss(*a, beta=0.1), xs)
    ones = torch.ones(6, dtype=torch.float64)
    for fn in (
        lambda *a: dpo_loss(*a, beta=0.1, weights=ones, targets=ones),
        lambda *a: dpo_loss(*a, beta=0.1, weights=ones * 3.0, targets=1.0),
        lambda *a: dpo_loss(*a, beta=0.1, weights=ones, weight_normalization="n"),
        lambda *a: robust_dpo_loss(*a, beta=0.1, epsilon=0.0, weights=ones),
        lambda *a: robust_dpo_loss(*a, beta=0.1, epsilon=torch.zeros(6, dtype=torch.float64)),
    ):
        assert_same(value_and_grad(fn, xs), plain)
    per_pair = dpo_loss(*xs, beta=0.1, reduction="none")
    torch.testing.assert_close(per_pair, -F.logsigmoid(dpo_logits(*xs, beta=0.1)))
    torch.testing.assert_close(dpo_loss(*xs, beta=0.1, reduction="sum"), per_pair.sum())


def test_weight_normalisation():
    xs = random_logps(seed=6)
    w = torch.tensor([0.5, 2.0, 0.0, 1.0, 3.0, 0.5], dtype=torch.float64)
    per = dpo_loss(*xs, beta=0.1, reduction="none").detach()
    by_w = dpo_loss(*xs, beta=0.1, weights=w)
    by_n = dpo_loss(*xs, beta=0.1, weights=w, weight_normalization="n")
    assert float(by_w) == pytest.approx(float((w * per).sum() / w.sum()), rel=1e-12)
    assert float(by_n) == pytest.approx(float((w * per).sum() / 6), rel=1e-12)
    # Σw normalisation is invariant to rescaling the weights, n normalisation is not
    assert float(dpo_loss(*xs, beta=0.1, weights=7 * w)) == pytest.approx(float(by_w), rel=1e-12)
    assert float(dpo_loss(*xs, beta=0.1, weights=7 * w, weight_normalization="n")) == pytest.approx(7 * float(by_n))
    torch.testing.assert_close(dpo_loss(*xs, beta=0.1, weights=w, reduction="none"), w * per)
    # a pair with weight 0 gets no gradient
    grads = torch.autograd.grad(by_w, xs)
    assert all(float(g[2]) == 0.0 for g in grads)
    assert all(float(g[1]) != 0.0 for g in grads)
    # all-zero weights: loss 0 and zero gradients, not NaN
    zero = dpo_loss(*xs, beta=0.1, weights=torch.zeros(6, dtype=torch.float64))
    assert float(zero) == 0.0
    assert all(torch.all(g == 0) for g in torch.autograd.grad(zero, xs))


def test_soft_targets_gradient_is_sigmoid_minus_q():
    z = torch.tensor([-2.0, 0.0, 1.5, 3.0], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.1, 0.5, 0.7, 1.0], dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    loss = dpo_loss(z, zero, zero, zero, beta=1.0, targets=q, reduction="sum")
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(g, torch.sigmoid(z.detach()) - q)
    # q = 1/2 is symmetric in the orientation of the pair
    a = dpo_loss(z, zero, zero, zero, beta=1.0, targets=0.5, reduction="none")
    b = dpo_loss(-z, zero, zero, zero, beta=1.0, targets=0.5, reduction="none")
    torch.testing.assert_close(a, b)


def test_implicit_rewards():
    pc, pr, rc, rr = (torch.tensor(v, dtype=torch.float64) for v in ([-1.0, -4.0], [-3.0, -2.0], [-2.0, -2.0], [-2.0, -2.0]))
    r = dpo_implicit_rewards(pc, pr, rc, rr, beta=0.5)
    torch.testing.assert_close(r.chosen, torch.tensor([0.5, -1.0], dtype=torch.float64))
    torch.testing.assert_close(r.rejected, torch.tensor([-0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(r.margins, dpo_logits(pc, pr, rc, rr, beta=0.5))
    assert float(r.accuracy) == 0.5


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_extreme_logits_finite(sign):
    big = torch.full((3,), sign * 1e4, dtype=torch.float32, requires_grad=True)
    zero = torch.zeros(3, requires_grad=True)
    fns = [
        lambda a, b: dpo_loss(a, b, b, b, beta=1.0),
        lambda a, b: dpo_loss(a, b, b, b, beta=1.0, targets=torch.tensor([0.0, 0.3, 1.0]), weights=torch.tensor([1.0, 2.0, 0.0])),
        lambda a, b: robust_dpo_loss(a, b, b, b, beta=1.0, epsilon=torch.tensor([0.0, 0.2, 0.4])),
        lambda a, b: ipo_loss(a, b, b, b, beta=0.1),
        lambda a, b: bradley_terry_loss(a, b, targets=torch.tensor([0.2, 0.9, 1.0]), margin=1.0),
    ]
    for fn in fns:
        loss = fn(big, zero)
        grads = torch.autograd.grad(loss, [big, zero])
        assert torch.isfinite(loss)
        assert all(torch.isfinite(g).all() for g in grads)
    # the plain loss is exactly 0 (confidently right) or 1e4·β (confidently wrong)
    plain = float(dpo_loss(big, zero, zero, zero, beta=1.0))
    assert plain == pytest.approx(0.0 if sign > 0 else 1e4)


# ------------------------------------------------------------------------------------------
# Bradley–Terry with members
# ------------------------------------------------------------------------------------------


def test_bradley_terry_members_and_bootstrap_weights():
    rc = torch.tensor([[1.0, 0.0], [2.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    rr = torch.zeros(3, 2, dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    per = -F.logsigmoid(rc - rr)
    m0 = (per[:, 0] * w[:, 0]).sum() / w[:, 0].sum()
    m1 = (per[:, 1] * w[:, 1]).sum() / w[:, 1].sum()
    assert float(bradley_terry_loss(rc, rr, weights=w)) == pytest.approx(float((m0 + m1) / 2), rel=1e-12)
    # per-pair weights broadcast over members
    w1 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    want = ((per * w1[:, None]).sum(0) / w1.sum()).mean()
    assert float(bradley_terry_loss(rc, rr, weights=w1)) == pytest.approx(float(want), rel=1e-12)
    # each member column equals the single-model loss on that column
    single = [float(bradley_terry_loss(rc[:, k], rr[:, k], weights=w[:, k])) for k in range(2)]
    assert float(bradley_terry_loss(rc, rr, weights=w)) == pytest.approx(np.mean(single), rel=1e-12)
    assert bradley_terry_loss(rc, rr, reduction="none").shape == (3, 2)
    # soft targets [B] broadcast over members
    q = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    want_q = (-q[:, None] * F.logsigmoid(rc) - (1 - q[:, None]) * F.logsigmoid(-rc)).mean()
    assert float(bradley_terry_loss(rc, rr, targets=q)) == pytest.approx(float(want_q), rel=1e-12)


# ------------------------------------------------------------------------------------------
# uncertainty -> weights / flip rates
# ------------------------------------------------------------------------------------------


def test_uncertainty_weights_methods():
    u = np.array([0.0, 0.5, 1.0, 2.0])
    w = uncertainty_weights(u, "exp", temperature=0.5, normalize=None)
    np.testing.assert_allclose(w, np.exp(-u / 0.5))
    w = uncertainty_weights(u, "exp", normalize=None)  # temperature = mean(u) = 0.875
    np.testing.assert_allclose(w, np.exp(-u / 0.875))
    np.testing.assert_allclose(uncertainty_weights(u, "linear", normalize=None), [1, 0.75, 0.5, 0])
    np.testing.assert_allclose(uncertainty_weights(u, "linear", u_max=1.0, normalize=None), [1, 0.5, 0, 0])
    np.testing.assert_allclose(uncertainty_weights(u, "threshold", threshold=0.5, normalize=None), [1, 1, 0, 0])
    np.testing.assert_allclose(uncertainty_weights(u, "rank", normalize=None), [1, 0.75, 0.5, 0.25])
    # ties share their mean rank
    np.testing.assert_allclose(
        uncertainty_weights(np.array([0.3, 0.1, 0.3, 0.2]), "rank", normalize=None), [0.375, 1.0, 0.375, 0.75]
    )
    # normalisation
    wm = uncertainty_weights(u, "linear")
    np.testing.assert_allclose(wm, np.array([1, 0.75, 0.5, 0]) / 0.5625)
    assert wm.mean() == pytest.approx(1.0)
    assert uncertainty_weights(u, "exp", temperature=1.0, normalize="sum").sum() == pytest.approx(1.0)
    # torch in, torch out
    t = uncertainty_weights(torch.tensor(u), "exp", temperature=1.0)
    assert isinstance(t, torch.Tensor) and float(t.mean()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all weights are zero"):
        uncertainty_weights(u, "threshold", threshold=-1.0)
    with pytest.raises(TypeError, match="threshold"):
        uncertainty_weights(u, "threshold")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        uncertainty_weights(u, "exp", temperature=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        uncertainty_weights(u, "cosine")


def test_uncertainty_weights_exp_no_overflow_or_underflow():
    # exp(-u/T) of u = -1000 (the temperature T defaults to 1 when mean(u) <= 0) overflowed to inf -> NaN
    # weights; u in [10, 20] with T = 0.01 underflowed to all zeros -> "all weights are zero"
    w = uncertainty_weights(np.array([-1000.0, 0.0]), "exp")
    np.testing.assert_allclose(w, [2.0, 0.0], atol=1e-300)
    u = np.array([10.0, 10.005, 20.0])
    expect = np.exp(-(u - 10.0) / 0.01)
    np.testing.assert_allclose(uncertainty_weights(u, "exp", temperature=0.01, normalize="sum"), expect / expect.sum())
    t = uncertainty_weights(torch.tensor([-1e4, -1e4 + 1.0]), "exp", temperature=1.0)
    assert bool(torch.isfinite(t).all()) and float(t.mean()) == pytest.approx(1.0)


def test_flip_rate_from_uncertainty():
    np.testing.assert_allclose(flip_rate_from_uncertainty(np.array([1.0, 0.9, 0.5, 0.1])), [0, 0.1, 0.45, 0.45])
    p = np.array([0.01, 0.1, 0.3, 0.45])
    h = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    np.testing.assert_allclose(flip_rate_from_uncertainty(h, input="entropy", max_rate=0.49), p, atol=1e-9)
    np.testing.assert_allclose(flip_rate_from_uncertainty(np.array([0.0, 1.0]), input="entropy"), [0.0, 0.45])
    with pytest.raises(ValueError, match="u must be"):
        flip_rate_from_uncertainty(np.array([1.2]))
    with pytest.raises(ValueError, match="max_rate"):
        flip_rate_from_uncertainty(np.array([0.5]), max_rate=0.5)


# ------------------------------------------------------------------------------------------
# penalised rewards
# ------------------------------------------------------------------------------------------


def test_penalized_reward_hand_computed():
    r = np.array([[1.0, 2.0, 6.0], [3.0, 4.0, 2.0], [2.0, 3.0, 4.0]])
    # member means: [2, 3, 4] -> centred rows: [-1,-1,2], [1,1,-2], [0,0,0]
    np.testing.assert_allclose(penalized_reward(r, "mean"), [0.0, 0.0, 0.0], atol=1e-12)
    std = np.sqrt(2.0)  # population std of (-1,-1,2)
    np.testing.assert_allclose(penalized_reward(r, "lcb", coef=0.5), [-0.5 * std, -0.5 * std, 0.0])
    np.testing.assert_allclose(penalized_reward(r, "wco"), [-1.0, -2.0, 0.0])
    np.testing.assert_allclose(penalized_reward(r, "uwo", coef=2.0), [-4.0, -4.0, 0.0])
    np.testing.assert_allclose(penalized_reward(r, "mean", center=False), [3.0, 3.0, 3.0])
    np.testing.assert_allclose(penalized_reward(r, "wco", member_offsets=[1.0, 2.0, 3.0]), [0.0, -1.0, 1.0])
    # one member: std and var are 0, never NaN
    np.testing.assert_allclose(penalized_reward(np.array([1.0, 3.0]), "lcb", coef=5.0), [-1.0, 1.0])


def test_penalized_reward_invariant_to_member_constants():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(20, 4))
    shifted = r + np.array([10.0, -3.0, 0.5, 100.0])
    for method in ("mean", "lcb", "wco", "uwo"):
        np.testing.assert_allclose(penalized_reward(r, method), penalized_reward(shifted, method), atol=1e-10)
    # without centring the shift shows up
    assert not np.allclose(penalized_reward(r, "wco", center=False), penalized_reward(shifted, "wco", center=False))
    # torch in, torch out, differentiable
    t = torch.tensor(r, requires_grad=True)
    out = penalized_reward(t, "lcb", coef=1.0)
    assert isinstance(out, torch.Tensor) and out.requires_grad
    out.sum().backward()
    assert torch.isfinite(t.grad).all()


# ------------------------------------------------------------------------------------------
# PPO pieces
# ------------------------------------------------------------------------------------------


def test_ppo_loss_clipping():
    old = torch.zeros(1, 4, dtype=torch.float64)
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 3.0]], dtype=torch.float64)).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 2.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    out = ppo_loss(lp, old, adv, mask, clip_range=0.2)
    # token 0: A>0, ratio 1.5 clipped to 1.2 -> -1.2; token 1: A<0, ratio 0.5 clipped to 0.8 -> 0.8
    # token 2: unclipped -2.2; token 3 masked
    assert float(out.loss) == pytest.approx((-1.2 + 0.8 - 2.2) / 3)
    assert float(out.clip_fraction) == pytest.approx(2 / 3)
    (g,) = torch.autograd.grad(out.loss, lp)
    torch.testing.assert_close(g, torch.tensor([[0.0, 0.0, -2.2 / 3, 0.0]], dtype=torch.float64))


def test_value_loss_kl_whiten_gae():
    v = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    old = torch.zeros(1, 2, dtype=torch.float64)
    ret = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # token 0: unclipped (1-0)^2=1, clipped (0.2-0)^2 -> max 1; token 1: 1 and 1
    assert float(value_loss(v, old, ret, clip_range_value=0.2)) == pytest.approx(0.5)
    v2 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    ret2 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    # unclipped 0, clipped (-0.2+1)^2 = 0.64 -> mean over 2 tokens of max, times 1/2
    assert float(value_loss(v2, old, ret2, clip_range_value=0.2)) == pytest.approx(0.5 * 0.64 / 2)

    lp, ref = torch.tensor([0.5, -0.2]), torch.tensor([0.0, 0.0])
    torch.testing.assert_close(kl_penalty(lp, ref, "k1"), lp)
    torch.testing.assert_close(kl_penalty(lp, ref, "k2"), 0.5 * lp**2)
    torch.testing.assert_close(kl_penalty(lp, ref, "k3"), torch.exp(-lp) - 1 + lp)
    assert torch.all(kl_penalty(lp, ref, "k3") >= 0)

    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1, 0]])
    wx = whiten(x, m)
    torch.testing.assert_close(wx[0, :3], torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(whiten(x, m, shift_mean=False)[0, :3], wx[0, :3] + 2.0)

    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.2, 0.4, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    gamma, lam = 0.9, 0.8
    adv, rets = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    d2 = 1.0 - 0.4
    d1 = 0.0 + gamma * 0.4 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0 + gamma * lam * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(rets, torch.tensor([[a0 + 0.5, a1 + 0.2, a2 + 0.4, 0.0]], dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


def test_masked_mean_and_whiten_broadcast_a_lower_rank_mask():
    # a [3] mask over a [2, 3] input selects 2 x 2 = 4 elements; the sum of the mask is 4, not 2
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 6.0, -50.0]], dtype=torch.float64)
    m = torch.tensor([1, 1, 0])
    kept = [1.0, 2.0, 3.0, 6.0]
    mean = sum(kept) / 4  # 3.0
    assert float(masked_mean(torch.ones(2, 3), m)) == 1.0  # was 2.0
    assert float(masked_mean(x, m)) == pytest.approx(mean, abs=1e-12)
    # per row (dim=1): [1.5, 4.5]; per column (dim=0): [2.0, 4.0, 0.0 (nothing kept)]
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([1.5, 4.5], dtype=torch.float64))
    torch.testing.assert_close(masked_mean(x, m, dim=0), torch.tensor([2.0, 4.0, 0.0], dtype=torch.float64))
    # the broadcast mask gives the same answer as the full mask written out
    full = m.expand(2, 3)
    assert float(masked_mean(x, m)) == float(masked_mean(x, full))
    var = sum((v - mean) ** 2 for v in kept) / 3  # Bessel-corrected over the 4 kept elements
    expected = torch.tensor([(v - mean) / math.sqrt(var + 1e-8) for v in kept], dtype=torch.float64)
    torch.testing.assert_close(whiten(x, m)[:, :2].reshape(-1), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(whiten(x, m), whiten(x, full))
    with pytest.raises(ValueError, match=r"mask of shape \(2,\) does not broadcast to the shape \(2, 3\) of x"):
        masked_mean(x, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="mask of shape"):
        masked_mean(torch.ones(3), torch.ones(2, 3))  # a mask may not enlarge x


def test_ipo_lengths_must_be_non_negative():
    pc, pr = torch.tensor([-2.0, -4.0]), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-2.5, -3.0]), torch.tensor([-2.0, -2.0])
    beta = 0.5
    # hand computation with lengths (2, 0) and (4, 1): a length of 0 counts as 1
    h = [(-2.0 + 2.5) / 2 - (-3.0 + 2.0) / 4, (-4.0 + 3.0) / 1 - (-1.0 + 2.0) / 1]
    expected = sum((v - 1 / (2 * beta)) ** 2 for v in h) / 2
    got = ipo_loss(pc, pr, rc, rr, beta=beta, chosen_lengths=[2.0, 0.0], rejected_lengths=[4.0, 1.0])
    assert float(got) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="chosen_lengths must be non-negative token counts, got a value of -3.0"):
        ipo_loss(pc, pr, rc, rr, chosen_lengths=[-3.0, 2.0])
    with pytest.raises(ValueError, match="rejected_lengths must be non-negative"):
        ipo_loss(pc, pr, rc, rr, chosen_lengths=[1, 2], rejected_lengths=[1, -1])


def test_bad_input_errors_name_the_argument():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        dpo_loss(x, x, x, x, weights=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="weights contains 1 NaN"):
        dpo_loss(x, x, x, x, weights=torch.tensor([1.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match="weights must have shape"):
        dpo_loss(x, x, x, x, weights=torch.ones(4))
    with pytest.raises(ValueError, match="targets must be labels in \\[0, 1\\]"):
        dpo_loss(x, x, x, x, targets=torch.tensor([0.5, 1.2, 0.0]))
    with pytest.raises(ValueError, match="targets"):
        bradley_terry_loss(x, x, targets=[-0.1, 0.5, 0.5])
    with pytest.raises(ValueError, match="policy_chosen_logps and ref_rejected_logps must have the same shape"):
        dpo_loss(x, x, x, torch.zeros(4))
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_logits(x, x, x, x, beta=-1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        ipo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="coef must be >= 0"):
        penalized_reward(np.ones((3, 2)), "lcb", coef=-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        robust_dpo_loss(x, x, x, x, epsilon=0.5)
    with pytest.raises(ValueError, match="epsilon"):
        robust_dpo_loss(x, x, x, x, epsilon=torch.tensor([0.1, 0.6, 0.0]))
    with pytest.raises(ValueError, match="policy_rejected_logps contains 1 NaN"):
        dpo_loss(x, torch.tensor([0.0, float("nan"), 0.0]), x, x)
    with pytest.raises(ValueError, match="rewards_chosen and rewards_rejected must have the same shape"):
        bradley_terry_loss(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="weights must have shape"):
        bradley_terry_loss(torch.zeros(3, 2), torch.zeros(3, 2), weights=torch.ones(3, 3))
    with pytest.raises(ValueError, match="targets must have shape"):  # was a RuntimeError
        bradley_terry_loss(torch.zeros(3, 2), torch.zeros(3, 2), targets=torch.ones(3, 3))
    with pytest.raises(ValueError, match="targets must have shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), targets=torch.ones(3, 1))
    with pytest.raises(ValueError, match="reduction"):
        dpo_loss(x, x, x, x, reduction="avg")
    with pytest.raises(ValueError, match="weight_normalization must be one of"):
        dpo_loss(x, x, x, x, weight_normalization="batch")
    with pytest.raises(ValueError, match="method"):
        penalized_reward(np.ones((3, 2)), "median")
    with pytest.raises(ValueError, match="member_offsets"):
        penalized_reward(np.ones((3, 2)), member_offsets=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="clip_range must be > 0"):
        ppo_loss(x, x, x, clip_range=0.0)
    with pytest.raises(ValueError, match="logprobs and advantages must have the same shape"):
        ppo_loss(x, x, torch.zeros(4))
    with pytest.raises(ValueError, match="estimator must be one of"):
        kl_penalty(x, x, "k4")
    with pytest.raises(ValueError, match="lam must be <= 1"):
        compute_gae(x[None], x[None], lam=1.5)

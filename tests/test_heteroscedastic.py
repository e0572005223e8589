"""Heteroscedastic reward heads (learned aleatoric noise), the Gaussian Bradley-Terry loss and
``decompose(..., noise_var=)``.

The main claim: heads trained with the Gaussian Bradley-Terry loss learn *which pairs are noisy*.
On synthetic pairs whose label noise depends on the responses (``make_heteroscedastic_preferences``,
noise orthogonal to the reward), the learned per-pair noise variance ranks the true one with
Spearman >= 0.8 on held-out pairs, for hard labels and for 5 annotator votes per pair, while the
margin-only aleatoric of a plain model is unrelated to it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _tiny_models import make_tiny_backbone
from _trainer_fixtures import make_tiny_bert, synthetic_pairs
from scipy.special import expit
from scipy.stats import spearmanr

from auq.cli import main
from auq.data import make_heteroscedastic_preferences
from auq.estimators import decompose
from auq.models import (
    MCDropoutRewardModel,
    MemberHeads,
    RewardEnsemble,
    RewardModel,
    load_reward_model,
)
from auq.training.losses import bradley_terry_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit_heads(data, *, heteroscedastic: bool, n_members: int = 2, max_iter: int = 100) -> MemberHeads:
    """Full-batch L-BFGS on the (Gaussian) Bradley-Terry loss with the vote shares as soft targets."""
    torch.manual_seed(0)
    heads = MemberHeads(data.features_a.shape[1], n_members, seed=0, heteroscedastic=heteroscedastic).double()
    xa, xb = torch.from_numpy(data.features_a), torch.from_numpy(data.features_b)
    q = torch.from_numpy(data.targets)
    opt = torch.optim.LBFGS(heads.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        if heteroscedastic:
            (ma, va), (mb, vb) = heads.forward_with_variance(xa), heads.forward_with_variance(xb)
            loss = bradley_terry_loss(ma, mb, targets=q, noise_var=va + vb)
        else:
            loss = bradley_terry_loss(heads(xa), heads(xb), targets=q)
        loss.backward()
        return loss

    opt.step(closure)
    return heads


def _scores(heads, data):
    with torch.no_grad():
        xa, xb = torch.from_numpy(data.features_a), torch.from_numpy(data.features_b)
        if heads.heteroscedastic:
            (ma, va), (mb, vb) = heads.forward_with_variance(xa), heads.forward_with_variance(xb)
            v = (va + vb).numpy()
        else:
            ma, mb, v = heads(xa), heads(xb), None
    return decompose((ma - mb).numpy(), noise_var=v), v


# -- the claim --------------------------------------------------------------------------------


@pytest.mark.parametrize("n_train, n_votes", [(4000, 1), (2000, 5)], ids=["hard-labels", "5-votes"])
def test_learned_aleatoric_tracks_true_per_pair_noise(n_train, n_votes):
    train = make_heteroscedastic_preferences(n_train, n_votes=n_votes, seed=1)
    test = make_heteroscedastic_preferences(1000, n_votes=n_votes, seed=2)
    hetero = _fit_heads(train, heteroscedastic=True)
    plain = _fit_heads(train, heteroscedastic=False)
    dec, noise_var = _scores(hetero, test)
    dec_plain, _ = _scores(plain, test)
    # the learned noise variance of each held-out pair ranks the true one
    rho_var = spearmanr(noise_var.mean(axis=1), test.noise_var)[0]
    assert rho_var >= 0.8, rho_var
    # the learned aleatoric entropy tracks the true label entropy better than the margin-only one
    rho_h = spearmanr(dec.aleatoric, test.true_entropy)[0]
    rho_h_plain = spearmanr(dec_plain.aleatoric, test.true_entropy)[0]
    assert rho_h >= 0.9 and rho_h >= rho_h_plain + 0.05, (rho_h, rho_h_plain)
    # the margin-only aleatoric knows nothing of the noise; the learned one does
    assert abs(spearmanr(dec_plain.aleatoric, test.noise_var)[0]) < 0.15
    assert spearmanr(dec.aleatoric, test.noise_var)[0] > 0.25


def test_synthetic_probabilities_integrate_the_noise():
    d = make_heteroscedastic_preferences(5, n_votes=3, seed=4, beta=2.0, noise_scale=0.5)
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((200_000, 1)) * np.sqrt(d.noise_var)
    mc = expit(d.rewards_a - d.rewards_b + eps).mean(axis=0)
    np.testing.assert_allclose(d.true_probs, mc, atol=4e-3)
    np.testing.assert_allclose(d.noise_var_a, 4.0 * np.exp(2 * 0.5 * d.features_a[:, 1]))
    np.testing.assert_allclose(d.rewards_a, 2.0 * d.features_a[:, 0])
    assert np.array_equal(d.targets, d.votes / 3)
    with pytest.raises(ValueError, match="n_votes"):
        make_heteroscedastic_preferences(5, n_votes=0)


# -- decompose(noise_var=) -------------------------------------------------------------------


def test_decompose_with_noise_var_equals_hand_computation():
    m = np.array([[2.0, -1.0], [0.5, 3.0]])
    v = np.array([[1.0, 0.0], [4.0, 0.25]])
    d = decompose(m, noise_var=v)
    p = expit(m / np.sqrt(1.0 + math.pi * v / 8.0))

    def h(x):
        return -(x * np.log(x) + (1 - x) * np.log(1 - x))

    np.testing.assert_allclose(d.prob, p.mean(1), rtol=1e-14)
    np.testing.assert_allclose(d.aleatoric, h(p).mean(1), rtol=1e-13)
    np.testing.assert_allclose(d.total, h(p.mean(1)), rtol=1e-13)
    np.testing.assert_allclose(d.epistemic, h(p.mean(1)) - h(p).mean(1), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(d.margin_mean, m.mean(1))  # the variance view is about the margins
    np.testing.assert_allclose(d.margin_std, m.std(1))
    # a per-pair noise variance [n] is shared by the members
    shared = decompose(m, noise_var=v[:, 0])
    np.testing.assert_array_equal(shared.aleatoric, decompose(m, noise_var=v[:, [0, 0]]).aleatoric)
    # rewards of the two sides + noise_var
    two = decompose(m + 1.0, np.ones_like(m), noise_var=v)
    np.testing.assert_allclose(two.aleatoric, d.aleatoric, rtol=1e-14)


def test_decompose_zero_noise_is_exactly_todays_decompose():
    rng = np.random.default_rng(0)
    m = rng.normal(scale=3.0, size=(50, 4))
    plain, zero = decompose(m), decompose(m, noise_var=np.zeros_like(m))
    for name in plain._ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(zero, name), getattr(plain, name))
    t = torch.from_numpy(m).float()
    a, b = decompose(t), decompose(t, noise_var=torch.zeros_like(t))
    assert torch.equal(a.aleatoric, b.aleatoric) and torch.equal(a.total, b.total)


def test_decompose_noise_var_extremes_are_finite():
    m = np.array([[1e4, -1e4], [0.0, 5.0], [30.0, 30.0]])
    v = np.array([[0.0, 1e12], [1e-300, 1e6], [1e8, 0.0]])
    for dtype in (torch.float32, torch.float64):
        d = decompose(torch.tensor(m, dtype=dtype), noise_var=torch.tensor(v, dtype=dtype))
        for name in d._ARRAY_FIELDS:
            assert torch.isfinite(getattr(d, name)).all(), name
        # a huge noise variance makes a member a coin flip: aleatoric -> log 2
        assert float(d.aleatoric[0]) == pytest.approx(0.5 * math.log(2.0), rel=1e-3)


def test_decompose_gradient_flows_to_the_noise_variance():
    m = torch.tensor([[1.5, 2.0], [-0.5, 0.3]], dtype=torch.float64)
    v = torch.tensor([[0.5, 1.0], [2.0, 0.1]], dtype=torch.float64, requires_grad=True)
    d = decompose(m, noise_var=v)
    assert isinstance(d.aleatoric, torch.Tensor)
    d.aleatoric.sum().backward()
    assert v.grad is not None and bool((v.grad > 0).all())  # more noise, more aleatoric uncertainty
    # numpy margins + a tensor variance give tensors, differentiable in the variance
    v2 = v.detach().clone().requires_grad_(True)
    d2 = decompose(m.numpy(), noise_var=v2)
    assert isinstance(d2.total, torch.Tensor)
    torch.testing.assert_close(d2.aleatoric, d.aleatoric.detach())
    assert torch.autograd.gradcheck(lambda x: decompose(m, noise_var=x).total, (v.detach().clone().requires_grad_(True),))


# -- bradley_terry_loss(noise_var=) ----------------------------------------------------------


def test_gaussian_bt_loss_equals_hand_computation():
    rc = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]], dtype=torch.float64)
    rr = torch.tensor([[0.0, 0.5], [1.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[0.3, 2.0], [1.0, 0.0], [5.0, 0.7]], dtype=torch.float64)
    q = torch.tensor([1.0, 0.25, 0.6], dtype=torch.float64)
    w = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 1.0]], dtype=torch.float64)
    got = bradley_terry_loss(rc, rr, targets=q, weights=w, noise_var=v, margin=0.2, reduction="none")
    z = (rc.numpy() - rr.numpy() - 0.2) / np.sqrt(1.0 + math.pi * v.numpy() / 8.0)
    p = expit(z)
    qn = q.numpy()[:, None]
    expected = w.numpy() * -(qn * np.log(p) + (1 - qn) * np.log(1 - p))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    mean = bradley_terry_loss(rc, rr, targets=q, weights=w, noise_var=v, margin=0.2)
    assert float(mean) == pytest.approx(float(np.mean(expected.sum(0) / w.numpy().sum(0))), rel=1e-12)
    # zero noise is the plain loss exactly; [B] noise is shared by the members
    assert torch.equal(
        bradley_terry_loss(rc, rr, targets=q, noise_var=torch.zeros_like(rc)), bradley_terry_loss(rc, rr, targets=q)
    )
    torch.testing.assert_close(
        bradley_terry_loss(rc, rr, noise_var=v[:, 0], reduction="none"),
        bradley_terry_loss(rc, rr, noise_var=v[:, [0, 0]], reduction="none"),
    )


def test_gaussian_bt_loss_gradcheck():
    gen = torch.Generator().manual_seed(0)
    rc = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    rr = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    v = (torch.rand(5, 3, generator=gen, dtype=torch.float64) + 0.1).requires_grad_(True)
    q = torch.rand(5, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: bradley_terry_loss(a, b, targets=q, noise_var=c), (rc, rr, v))


# -- heads and models ------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [None, 6])
@pytest.mark.parametrize("per_member", [False, True])
def test_member_heads_variance(hidden, per_member):
    heads = MemberHeads(4, 3, seed=2, hidden=hidden, heteroscedastic=True).double()
    x = torch.randn(5, 3, 4, dtype=torch.float64) if per_member else torch.randn(5, 4, dtype=torch.float64)
    mean, var = heads.forward_with_variance(x)
    assert mean.shape == var.shape == (5, 3)
    torch.testing.assert_close(mean, heads(x))  # forward still gives the means
    torch.testing.assert_close(var, torch.full_like(var, 0.01))  # starts small ...
    with torch.no_grad():
        heads.var_weight.normal_()
    mean, var = heads.forward_with_variance(x)
    xk = x if per_member else x[:, None, :].expand(5, 3, 4)
    expected = torch.nn.functional.softplus((xk * heads.var_weight).sum(-1) + heads.var_bias)
    torch.testing.assert_close(var, expected)
    var.sum().backward()  # ... and learns
    assert heads.var_weight.grad.abs().sum() > 0
    # the reward heads are initialised exactly as without variance heads
    plain = MemberHeads(4, 3, seed=2, hidden=hidden).double()
    torch.testing.assert_close(plain(x), heads(x))
    with pytest.raises(ValueError, match="heteroscedastic"):
        plain.forward_with_variance(x)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return str(make_tiny_backbone(tmp_path_factory.mktemp("hetero_bert") / "bert", "bert"))


@pytest.mark.parametrize("build", ["single", "heads", "independent", "mc-head"])
def test_heteroscedastic_model_round_trip(bert, tmp_path, build):
    if build == "single":
        model = RewardModel.from_backbone(bert, heteroscedastic=True, head_hidden=4)
    elif build == "mc-head":
        model = MCDropoutRewardModel.from_backbone(bert, n_samples=4, scope="head", heteroscedastic=True)
    else:
        model = RewardEnsemble.from_backbone(bert, kind=build, n_members=2, heteroscedastic=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model.eval()
    batch = model.tokenizer(["a good answer", "the lazy dog sleeps"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        rewards, var = model.forward_with_variance(ids, mask)
        assert torch.equal(model(ids, mask), rewards) and rewards.shape == (2, model.n_members)
        assert var.shape == rewards.shape and bool((var > 0).all())
        feats = model.encode(ids, mask)
        torch.testing.assert_close(model.forward_features_with_variance(feats)[1], var)
        if build == "mc-head":  # the variance head reads the same masked features as the reward head
            masks = model.sample_masks()[0]
            h = model.heads
            expected = torch.nn.functional.softplus((feats[:, None, :] * masks * h.var_weight[0]).sum(-1) + h.var_bias)
            torch.testing.assert_close(var, expected)
            assert var[0].unique().numel() == 4  # T different samples
    model.save_pretrained(tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "config.json").read_text())["heteroscedastic"] is True
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.heteroscedastic
    with torch.no_grad():
        r2, v2 = loaded.forward_with_variance(ids, mask)
    assert torch.equal(r2, rewards) and torch.equal(v2, var)


def test_plain_model_has_no_variance(bert):
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2)
    assert not model.heteroscedastic and "var_weight" not in dict(model.named_parameters()).keys()
    with pytest.raises(ValueError, match="heteroscedastic=False"):
        model.forward_features_with_variance(torch.zeros(1, model.config.hidden_size))


# -- training through the trainer and the CLI ------------------------------------------------


def test_cli_trains_heteroscedastic_heads(tmp_path, capsys):
    bert = make_tiny_bert(str(tmp_path / "tiny-bert"))
    data = tmp_path / "train.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for p in synthetic_pairs(48, seed=1, noise=0.2):
            f.write(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}) + "\n")
    out = str(tmp_path / "rm")
    argv = [
        "train", "--data", str(data), "--backbone", bert, "--kind", "heads", "--members", "2",
        "--epochs", "2", "--output", out, "--batch-size", "8", "--max-length", "32", "--lr", "1e-2",
        "--eval-fraction", "0", "--heteroscedastic", "--no-progress", "-q",
    ]  # fmt: skip
    assert main(argv) == 0
    model = load_reward_model(out)
    assert model.heteroscedastic
    # the variance heads start at weight 0 and only the Gaussian BT loss moves them: the trainer
    # passed the variances to the loss
    assert float(model.heads.var_weight.detach().abs().sum()) > 0
    bad = argv[:6] + ["mc-dropout", "--mc-scope", "full"] + argv[7:]
    assert main(bad) == 2
    assert "--heteroscedastic" in capsys.readouterr().err


@pytest.mark.parametrize("build", ["single-tokens", "mc-head-features"])
def test_trainer_trains_the_variance_heads(bert, tmp_path, build):
    from _trainer_fixtures import synthetic_dataset

    from auq.training import RewardModelTrainer, RewardTrainerConfig

    if build == "single-tokens":
        model = RewardModel.from_backbone(bert, heteroscedastic=True, train_trunk=True)
    else:
        model = MCDropoutRewardModel.from_backbone(bert, n_samples=3, scope="head", heteroscedastic=True)
    assert float(model.heads.var_weight.detach().abs().sum()) == 0.0
    cfg = RewardTrainerConfig(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2,
        bootstrap=False, max_length=32, disable_tqdm=True,
    )  # fmt: skip
    trainer = RewardModelTrainer(model, cfg, synthetic_dataset(24, seed=3, noise=0.3))
    # a trained trunk: texts go through _PairForward; a frozen one: cached features, _FeatureForward
    assert trainer.use_features == (build == "mc-head-features")
    trainer.train()
    assert float(model.heads.var_weight.detach().abs().sum()) > 0


# -- bad input -------------------------------------------------------------------------------


def test_bad_noise_var_is_rejected(bert):
    m = np.array([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="noise_var must be non-negative"):
        decompose(m, noise_var=[[0.1, -0.1], [0.0, 0.0]])
    with pytest.raises(ValueError, match="noise_var"):
        decompose(m, noise_var=[[0.1, np.nan], [0.0, 0.0]])
    with pytest.raises(ValueError, match="noise_var must have the margins' shape"):
        decompose(m, noise_var=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="noise_var must have the margins' shape"):
        decompose(m, noise_var=np.zeros(3))
    rc, rr = torch.zeros(2, 2), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="noise_var must be non-negative"):
        bradley_terry_loss(rc, rr, noise_var=torch.tensor([[0.0, -1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="noise_var"):
        bradley_terry_loss(rc, rr, noise_var=torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="noise_var"):
        bradley_terry_loss(rc, rr, noise_var=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="noise_var"):
        bradley_terry_loss(rc, rr, noise_var=torch.zeros(3))
    with pytest.raises(ValueError, match="scope='head'"):
        MCDropoutRewardModel.from_backbone(bert, n_samples=2, scope="full", heteroscedastic=True)
    with pytest.raises(TypeError, match="heteroscedastic"):
        RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, heteroscedastic="yes")

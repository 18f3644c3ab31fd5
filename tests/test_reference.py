"""The reference ITHP against the spec's formulas written out by hand, plus its contract."""

import pytest
import torch
from helpers import make_inputs, make_noise, small_config

from ithp_fast.reference import ITHP

STATE_KEYS = [
    f"{m}.{i}.{p}"
    for m in ("encoder1", "MLP1", "encoder2", "MLP2")
    for i in (0, 3)
    for p in ("weight", "bias")
]


def spec_forward(params, cfg, x, visual, acoustic, eps0, eps1):
    """The spec, step by step, from raw weight tensors (no nn modules, no dropout)."""

    def linear(t, name):
        return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    def two_layer(t, m):
        return linear(torch.clamp(linear(t, f"{m}.0"), min=0), f"{m}.3")

    def level(inp, enc, det, width, target, eps):
        h = two_layer(inp, enc)
        mu, logvar = h[..., :width], h[..., width:]
        rows = mu.reshape(-1, width)
        lv = logvar.reshape(-1, width)
        per_row = -0.5 * (1 + lv - rows * rows - torch.exp(lv)).sum(-1) / width
        kl = per_row.sum() / per_row.numel()
        b = mu + eps * torch.exp(logvar / 2)
        out = 1 / (1 + torch.exp(-two_layer(b, det)))
        mse = ((out - target) ** 2).sum() / target.numel()
        return b, kl, mse

    b0, kl0, mse0 = level(x, "encoder1", "MLP1", cfg.B0_dim, acoustic, eps0)
    b1, kl1, mse1 = level(b0, "encoder2", "MLP2", cfg.B1_dim, visual, eps1)
    ib = kl0 + cfg.p_beta * mse0 + cfg.p_lambda * (kl1 + cfg.p_gamma * mse1)
    return b1, ib, kl0, mse0, kl1, mse1


def test_state_dict_keys_are_the_released_ones():
    assert list(ITHP(small_config()).state_dict()) == STATE_KEYS


def test_module_shapes_and_default_init():
    cfg = small_config()
    m = ITHP(cfg)
    assert m.encoder1[3].weight.shape == (2 * cfg.B0_dim, cfg.inter_dim)
    assert m.MLP1[3].weight.shape == (cfg.X1_dim, cfg.inter_dim)
    assert m.encoder2[0].weight.shape == (cfg.inter_dim, cfg.B0_dim)
    assert m.MLP2[3].weight.shape == (cfg.X2_dim, cfg.inter_dim)
    assert isinstance(m.MLP1[4], torch.nn.Sigmoid) and isinstance(m.MLP2[5], torch.nn.Dropout)
    # nn.Linear's default init: uniform in +-1/sqrt(fan_in)
    w = m.encoder1[0].weight
    assert w.abs().max() <= cfg.X0_dim ** -0.5 and w.std() > 0.3 * cfg.X0_dim ** -0.5


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("training", [True, False])
def test_six_outputs_match_the_hand_written_spec(dtype, tol, training):
    cfg = small_config(drop_prob=0.0)
    torch.manual_seed(0)
    m = ITHP(cfg).to(dtype).train(training)
    x, v, a = make_inputs(cfg, dtype=dtype)
    noise = make_noise(cfg, dtype=dtype)
    got = m(x, v, a, noise=noise)
    want = spec_forward(dict(m.named_parameters()), cfg, x, v, a, *noise)
    for name, g, w in zip(["b1", "IB_total", "kl0", "mse0", "kl1", "mse1"], got, want):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g, w.detach(), rtol=tol, atol=tol, msg=name)


def test_dropout_is_applied_in_training_only():
    cfg = small_config(drop_prob=0.5)
    torch.manual_seed(0)
    m = ITHP(cfg)
    x, v, a = make_inputs(cfg)
    noise = make_noise(cfg)
    want = spec_forward(dict(m.named_parameters()), cfg, x, v, a, *noise)
    m.eval()
    torch.testing.assert_close(m(x, v, a, noise=noise)[1], want[1].detach())
    m.train()
    assert not torch.allclose(m(x, v, a, noise=noise)[1], want[1])


def test_gradients_reach_every_parameter():
    cfg = small_config()
    m = ITHP(cfg)
    x, v, a = make_inputs(cfg)
    x.requires_grad_(True)
    b1, ib, *_ = m(x, v, a)
    (ib + b1.square().mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradcheck_float64():
    cfg = small_config(X0_dim=5, X1_dim=3, X2_dim=2, inter_dim=4, B0_dim=3, B1_dim=2, drop_prob=0.0)
    torch.manual_seed(0)
    m = ITHP(cfg).double()
    x, v, a = make_inputs(cfg, lead=(2, 3), dtype=torch.float64)
    e0, e1 = make_noise(cfg, lead=(2, 3), dtype=torch.float64)
    x.requires_grad_(True)

    def g(x, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x, v, a), {"noise": (e0, e1)})[:2]

    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in m.named_parameters()]
    assert torch.autograd.gradcheck(g, (x, *params))


def test_eval_mean_gives_the_posterior_mean_chain():
    cfg = small_config()
    torch.manual_seed(0)
    m = ITHP(cfg, eval_sampling="mean").eval()
    x, v, a = make_inputs(cfg)
    mu0 = m.encoder1(x)[..., : cfg.B0_dim]
    mu1 = m.encoder2(mu0)[..., : cfg.B1_dim]
    torch.testing.assert_close(m(x, v, a)[0], mu1)
    torch.testing.assert_close(m.encode(x), mu1)
    # training mode still samples
    m.train()
    assert not torch.allclose(m(x, v, a)[0], mu1)


def test_default_eval_mode_samples_and_seed_reproduces():
    cfg = small_config()
    m = ITHP(cfg).eval()
    x, v, a = make_inputs(cfg)
    first, second = m(x, v, a)[0], m(x, v, a)[0]
    assert not torch.allclose(first, second)
    torch.manual_seed(7)
    r1 = m(x, v, a)
    torch.manual_seed(7)
    r2 = m(x, v, a)
    for p, q in zip(r1, r2):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_encode_sample_uses_the_noise_like_forward():
    cfg = small_config()
    torch.manual_seed(0)
    m = ITHP(cfg).eval()
    x, v, a = make_inputs(cfg)
    noise = make_noise(cfg)
    torch.testing.assert_close(m.encode(x, sample=True, noise=noise), m(x, v, a, noise=noise)[0])
    with pytest.raises(ValueError, match="sample=False"):
        m.encode(x, noise=noise)


def test_2d_and_3d_inputs_give_the_same_numbers():
    cfg = small_config()
    m = ITHP(cfg).eval()
    x, v, a = make_inputs(cfg, lead=(3, 5))
    e0, e1 = make_noise(cfg, lead=(3, 5))
    out3 = m(x, v, a, noise=(e0, e1))
    flat = [t.reshape(15, -1) for t in (x, v, a, e0, e1)]
    out2 = m(*flat[:3], noise=tuple(flat[3:]))
    torch.testing.assert_close(out3[0].reshape(15, -1), out2[0])
    for p, q in zip(out3[1:], out2[1:]):
        torch.testing.assert_close(p, q)


def test_non_contiguous_inputs():
    cfg = small_config()
    m = ITHP(cfg).eval()
    x, v, a = make_inputs(cfg, lead=(5, 3))
    noise = make_noise(cfg, lead=(5, 3))
    xt, vt, at = (t.transpose(0, 1) for t in (x, v, a))
    nt = tuple(t.transpose(0, 1) for t in noise)
    assert not xt.is_contiguous()
    want = m(xt.contiguous(), vt.contiguous(), at.contiguous(), noise=tuple(t.contiguous() for t in nt))
    got = m(xt, vt, at, noise=nt)
    for p, q in zip(got, want):
        torch.testing.assert_close(p, q)


def spec_levels(params, cfg, x, detectors, noise, token_mask=None, detector_mask=None):
    """The N-level spec from raw weights, every mean over the rows it keeps picked out by indexing
    (a mean over no row is 0): independent of the reference's masked-mean code."""

    def linear(t, name):
        return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    def two_layer(t, m):
        return linear(torch.clamp(linear(t, f"{m}.0"), min=0), f"{m}.3")

    def mean_of_kept(per_row, keep):
        kept = per_row[keep] if keep is not None else per_row.reshape(-1)
        return kept.sum() / kept.numel() if kept.numel() else per_row.sum() * 0

    lead = x.shape[:-1]
    b, total, kls, mses = x, 0, [], []
    for k, (target, eps, width) in enumerate(zip(detectors, noise, cfg.bottleneck_dims)):
        h = two_layer(b, f"encoder{k + 1}")
        mu, logvar = h[..., :width], h[..., width:]
        kl = mean_of_kept(-0.5 * (1 + logvar - mu * mu - torch.exp(logvar)).sum(-1) / width, token_mask)
        b = mu + eps * torch.exp(logvar / 2)
        out = 1 / (1 + torch.exp(-two_layer(b, f"MLP{k + 1}")))
        keep = token_mask
        if detector_mask is not None:
            present = detector_mask[:, k].reshape(-1, *([1] * (len(lead) - 1))).expand(lead)
            keep = present if keep is None else keep & present
        mse = mean_of_kept(((out - target) ** 2).sum(-1) / target.shape[-1], keep)
        total = total + cfg.level_weights[k] * (kl + cfg.detector_weights[k] * mse)
        kls.append(kl)
        mses.append(mse)
    return b, total, kls, mses


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("masks", ["none", "token", "detector", "both"])
def test_levels_match_the_hand_written_spec(levels, masks):
    from helpers import TOKEN_MASKS, level_config, make_level_inputs, make_level_noise, token_mask

    cfg = level_config(levels, drop_prob=0.0)
    torch.manual_seed(0)
    m = ITHP(cfg).double()
    x, detectors = make_level_inputs(cfg, dtype=torch.float64)
    noise = make_level_noise(cfg, dtype=torch.float64)
    tokens = token_mask(TOKEN_MASKS["ragged"], 5) if masks in ("token", "both") else None
    present = torch.tensor([[True, False, True, True], [False, False, True, False], [True, False, False, True]])
    present = present[:, :levels] if masks in ("detector", "both") else None
    got = m.forward_levels(x, detectors, noise=noise, token_mask=tokens, detector_mask=present)
    want = spec_levels(dict(m.named_parameters()), cfg, x, detectors, noise, tokens, present)
    torch.testing.assert_close(got[0], want[0].detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], want[1].detach(), rtol=1e-12, atol=1e-12)
    for k in range(levels):
        torch.testing.assert_close(got[2][k], want[2][k].detach(), rtol=1e-12, atol=1e-12, msg=f"kl{k}")
        torch.testing.assert_close(got[3][k], want[3][k].detach(), rtol=1e-12, atol=1e-12, msg=f"mse{k}")


def test_released_config_forward_is_forward_levels_bit_for_bit():
    cfg = small_config()
    torch.manual_seed(0)
    m = ITHP(cfg).eval()
    x, v, a = make_inputs(cfg)
    noise = make_noise(cfg)
    b1, ib, kl0, mse0, kl1, mse1 = m(x, v, a, noise=noise)
    b, ib2, kls, mses = m.forward_levels(x, (a, v), noise=noise)
    for got, want in zip((b1, ib, kl0, kl1, mse0, mse1), (b, ib2, *kls, *mses)):
        assert torch.equal(got, want)
    assert cfg.level_weights == (1.0, cfg.p_lambda) and cfg.detector_weights == (cfg.p_beta, cfg.p_gamma)


def test_masked_rows_get_no_gradient_from_the_losses():
    from helpers import level_config, make_level_inputs, token_mask

    cfg = level_config(3)
    m = ITHP(cfg)
    x, detectors = make_level_inputs(cfg)
    x.requires_grad_(True)
    detectors = [d.requires_grad_(True) for d in detectors]
    tokens = token_mask([5, 2, 0], 5)
    present = torch.tensor([[True, False, True], [True, False, True], [False, False, True]])
    _, ib, kls, mses = m.forward_levels(x, detectors, token_mask=tokens, detector_mask=present)
    assert mses[1] == 0 and torch.isfinite(ib)  # no example has detector 2: that level's MSE adds 0
    ib.backward()
    assert (x.grad[~tokens] == 0).all() and x.grad[tokens].abs().sum() > 0
    for k, d in enumerate(detectors):
        keep = tokens & present[:, k, None]
        assert (d.grad[~keep] == 0).all() and (keep.any() == bool(d.grad.abs().sum() > 0))

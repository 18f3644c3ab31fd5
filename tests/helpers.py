"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

import torch

from ithp_fast import ITHPConfig

# Per-dtype tolerances for fast path vs reference on the same inputs and noise.
# float32: the same math in another order; bfloat16: 8-bit mantissa, float32 accumulation.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}


def small_config(**overrides) -> ITHPConfig:
    """A small ITHP config for fast tests (odd widths on purpose)."""
    base = dict(X0_dim=24, X1_dim=7, X2_dim=5, inter_dim=16, B0_dim=8, B1_dim=6, drop_prob=0.3)
    base.update(overrides)
    return ITHPConfig(**base)


def make_inputs(cfg: ITHPConfig, lead=(3, 5), dtype=torch.float32, device="cpu", seed=0):
    """Random ``(x, visual, acoustic)`` with detectors in [0, 1] like min-max normalised features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, cfg.X0_dim, generator=g)
    visual = torch.rand(*lead, cfg.X2_dim, generator=g)
    acoustic = torch.rand(*lead, cfg.X1_dim, generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, visual, acoustic))


def make_noise(cfg: ITHPConfig, lead=(3, 5), dtype=torch.float32, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*lead, d, generator=g).to(device=device, dtype=dtype) for d in (cfg.B0_dim, cfg.B1_dim))

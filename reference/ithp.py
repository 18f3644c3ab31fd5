"""The reference ITHP: the spec, line for line, in plain PyTorch.

This is the one place to read the math. The fast path (``ithp_fast.ITHP``) inherits this
class's constructor, so modules, parameter names, initialisation and state_dict are shared,
and is tested against this file's ``forward`` and ``encode``.

Per level (``enc``, ``det`` the encoder and detector MLPs, ``t`` the detector target)::

    mu, logvar = enc(inp).chunk(2, -1)
    kl  = mean_rows( -0.5 * mean_features(1 + logvar - mu^2 - exp(logvar)) )
    b   = mu + eps * exp(logvar / 2),          eps ~ N(0, 1)
    mse = mean((det(b) - t)^2)                 det ends in Sigmoid, Dropout

    IB0 = kl0 + p_beta * mse0;  IB1 = kl1 + p_gamma * mse1;  IB_total = IB0 + p_lambda * IB1
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import Noise, check_encode_inputs, check_forward_inputs
from ..config import ConfigLike, as_config

EVAL_SAMPLING = ("sample", "mean")


def mlp(d_in: int, d_hidden: int, d_out: int, p: float) -> list[nn.Module]:
    """``Linear -> ReLU -> Dropout -> Linear`` (indices 0..3 of the Sequential)."""
    return [nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(d_hidden, d_out)]


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) as the released model: mean over features, then rows."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).mean(dim=-1)).mean()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``b = mu + eps * exp(logvar / 2)``."""
    return mu + eps.to(mu.dtype) * torch.exp(logvar / 2)


def combine_ib(kl0, mse0, kl1, mse1, p_beta: float, p_gamma: float, p_lambda: float):
    """``IB_total = (kl0 + p_beta*mse0) + p_lambda*(kl1 + p_gamma*mse1)``."""
    return (kl0 + p_beta * mse0) + p_lambda * (kl1 + p_gamma * mse1)


class ITHP(nn.Module):
    """Information-Theoretic Hierarchical Perception (reference implementation).

    Args:
        ITHP_args: the released model's argument dict (keys ``X0_dim`` … ``max_sen_len``) or an
            :class:`ithp_fast.ITHPConfig`.
        eval_sampling: what ``forward`` does in eval mode. ``"sample"`` (default, the released
            behaviour) draws ``b = mu + eps*sigma`` in eval mode too; ``"mean"`` returns the
            posterior mean ``b = mu`` in eval mode. Training mode always samples.
    """

    def __init__(self, ITHP_args: ConfigLike, *, eval_sampling: str = "sample") -> None:
        super().__init__()
        cfg = as_config(ITHP_args)
        if eval_sampling not in EVAL_SAMPLING:
            raise ValueError(f"eval_sampling: expected one of {EVAL_SAMPLING}, got {eval_sampling!r}")
        self.config = cfg
        self.eval_sampling = eval_sampling
        # Attribute names of the released model, for code that reads them.
        for key, value in cfg.to_dict().items():
            setattr(self, key, value)
        p = cfg.drop_prob
        self.encoder1 = nn.Sequential(*mlp(cfg.X0_dim, cfg.inter_dim, 2 * cfg.B0_dim, p))
        self.MLP1 = nn.Sequential(*mlp(cfg.B0_dim, cfg.inter_dim, cfg.X1_dim, p), nn.Sigmoid(), nn.Dropout(p))
        self.encoder2 = nn.Sequential(*mlp(cfg.B0_dim, cfg.inter_dim, 2 * cfg.B1_dim, p))
        self.MLP2 = nn.Sequential(*mlp(cfg.B1_dim, cfg.inter_dim, cfg.X2_dim, p), nn.Sigmoid(), nn.Dropout(p))

    def extra_repr(self) -> str:
        return f"eval_sampling={self.eval_sampling!r}"

    @property
    def samples(self) -> bool:
        """Whether ``forward`` draws ``b = mu + eps*sigma`` now (else ``b = mu``)."""
        return self.training or self.eval_sampling == "sample"

    def _first_param(self) -> Optional[torch.Tensor]:
        return next(self.parameters(), None)

    def _level(self, encoder, detector, inp, target, eps):
        mu, logvar = encoder(inp).chunk(2, dim=-1)
        kl = kl_to_standard_normal(mu, logvar)
        if not self.samples:
            b = mu
        else:
            b = reparameterize(mu, logvar, torch.randn_like(mu) if eps is None else eps)
        mse = F.mse_loss(detector(b), target)
        return b, kl, mse

    def forward(self, x: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor, *, noise: Noise = None):
        """Returns ``(b1, IB_total, kl0, mse0, kl1, mse1)``; note the order ``x, visual, acoustic``.

        ``noise=(eps0, eps1)`` injects the Gaussian draws (shapes of ``mu0`` and ``mu1``);
        without it they come from torch's generator. Ignored where ``b = mu`` (eval mode with
        ``eval_sampling="mean"``).
        """
        eps0, eps1 = check_forward_inputs(self.config, x, visual, acoustic, noise, self._first_param()) or (None, None)
        cfg = self.config
        b0, kl0, mse0 = self._level(self.encoder1, self.MLP1, x, acoustic, eps0)
        b1, kl1, mse1 = self._level(self.encoder2, self.MLP2, b0, visual, eps1)
        IB_total = combine_ib(kl0, mse0, kl1, mse1, cfg.p_beta, cfg.p_gamma, cfg.p_lambda)
        return b1, IB_total, kl0, mse0, kl1, mse1

    def encode(self, x: torch.Tensor, *, sample: bool = False, noise: Noise = None) -> torch.Tensor:
        """``b1`` from the text features alone (the detectors are training-time machinery).

        ``sample=False``: the posterior-mean chain ``b0 = mu0``, ``b1 = mu1``.
        ``sample=True``: ``b = mu + eps*sigma`` at both levels, as the released forward draws;
        ``noise=(eps0, eps1)`` injects the draws.
        """
        noise = check_encode_inputs(self.config, x, noise, self._first_param())
        if noise is not None and not sample:
            raise ValueError("noise: given, but sample=False computes the posterior mean and uses no noise")
        eps0, eps1 = noise or (None, None)
        b = x
        for encoder, eps in ((self.encoder1, eps0), (self.encoder2, eps1)):
            mu, logvar = encoder(b).chunk(2, dim=-1)
            if sample:
                b = reparameterize(mu, logvar, torch.randn_like(mu) if eps is None else eps)
            else:
                b = mu
        return b

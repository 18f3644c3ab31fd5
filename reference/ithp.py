"""The reference ITHP: the spec, line for line, in plain PyTorch, for any number of levels.

This is the one place to read the math. The fast path (``ithp_fast.ITHP``) inherits this
class's constructor, so modules, parameter names, initialisation and state_dict are shared,
and is tested against this file's ``forward``, ``forward_levels`` and ``encode``.

Level k (k = 1 .. N; modules ``encoder{k}`` and ``MLP{k}``; ``inp`` is ``x`` at level 1, the
previous level's ``b`` after it; ``t`` the level's detector):

    mu, logvar = encoder_k(inp).chunk(2, -1)
    kl_k  = mean_rows( -0.5 * mean_features(1 + logvar - mu^2 - exp(logvar)) )
    b_k   = mu + eps_k * exp(logvar / 2),       eps_k ~ N(0, 1)
    mse_k = mean_rows( mean_features((MLP_k(b_k) - t)^2) )          MLP_k ends in Sigmoid, Dropout

    IB_total = sum_k level_weights[k] * (kl_k + detector_weights[k] * mse_k)

A row is one token: one index of ``x``'s leading dimensions. The released model is N = 2 with
level 1 = acoustic (``X1_dim``), level 2 = visual (``X2_dim``), ``detector_weights = (p_beta,
p_gamma)`` and ``level_weights = (1, p_lambda)``; ``forward(x, visual, acoustic)`` is that call.

Masks (``forward_levels``, and ``forward`` as keywords) choose the rows of each mean:

* ``token_mask`` (x's leading shape, bool, True = a real token): KL and MSE average over the real
  tokens only, as if the others were cut off;
* ``detector_mask`` (``[batch, N]``, bool, True = present): level k's MSE also leaves out the
  examples whose detector k is absent (its KL does not).

A masked mean over no row is 0 (the level then adds nothing, and no NaN); the rows left out get a
zero gradient from the losses while their values are finite (a left-out row holding NaN or Inf
still sends NaN back, as ``0 * NaN``). Without masks the means are torch's: an empty batch gives NaN.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import Noise, check_encode_inputs, check_forward_inputs, check_level_inputs
from ..config import ConfigLike, as_config

EVAL_SAMPLING = ("sample", "mean")


def mlp(d_in: int, d_hidden: int, d_out: int, p: float) -> list[nn.Module]:
    """``Linear -> ReLU -> Dropout -> Linear`` (indices 0..3 of the Sequential)."""
    return [nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(d_hidden, d_out)]


class _NamedLayers(nn.Sequential):
    """A ``Sequential`` (same constructor, children ``0``, ``1``, ...: the released state_dict keys)
    whose layers also have names; a slice is a plain ``Sequential``, as the released module's."""

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    @property
    def first(self) -> nn.Linear:
        return self[0]

    @property
    def dropout(self) -> nn.Dropout:
        return self[2]

    @property
    def last(self) -> nn.Linear:
        return self[3]


class Encoder(_NamedLayers):
    """Level k's encoder ``encoder{k}``: ``Linear -> ReLU -> Dropout -> Linear`` to ``[mu | logvar]``
    (:meth:`of` builds one), its layers also named :attr:`first`, :attr:`dropout`, :attr:`last`."""

    @classmethod
    def of(cls, d_in: int, d_hidden: int, latent: int, p: float) -> "Encoder":
        return cls(*mlp(d_in, d_hidden, 2 * latent, p))

    def mean_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` of the last Linear's ``mu`` rows (views; the ``logvar`` rows follow
        them): all that the posterior mean reads."""
        width = self.last.out_features // 2
        return self.last.weight[:width], self.last.bias[:width]


class Detector(_NamedLayers):
    """Level k's detector ``MLP{k}``: ``Linear -> ReLU -> Dropout -> Linear -> Sigmoid -> Dropout``
    (:meth:`of` builds one), its layers also named :attr:`first`, :attr:`dropout`, :attr:`last`,
    :attr:`output_dropout`."""

    @classmethod
    def of(cls, latent: int, d_hidden: int, d_out: int, p: float) -> "Detector":
        return cls(*mlp(latent, d_hidden, d_out, p), nn.Sigmoid(), nn.Dropout(p))

    @property
    def output_dropout(self) -> nn.Dropout:
        return self[5]


class LevelModules(NamedTuple):
    """The modules of one level."""

    encoder: Encoder
    detector: Detector


def mean_over_rows(per_row: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mean of one value per row: over every row, or over the rows where ``rows`` is True
    (0 when none is). The rows left out contribute nothing, whatever their values."""
    if rows is None:
        return per_row.mean()
    return torch.where(rows, per_row, 0).sum() / rows.sum().clamp_min(1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) as the released model: mean over features, then rows."""
    return mean_over_rows(-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).mean(dim=-1), rows)


def detector_mse(out: torch.Tensor, target: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The reconstruction error: mean over all elements (= over features, then over ``rows``)."""
    if rows is None:
        return F.mse_loss(out, target)
    return mean_over_rows((out - target).pow(2).mean(dim=-1), rows)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``b = mu + eps * exp(logvar / 2)``."""
    return mu + eps.to(mu.dtype) * torch.exp(logvar / 2)


def combine_ib(kl_terms: Sequence, mse_terms: Sequence, detector_weights: Sequence[float],
               level_weights: Sequence[float]):
    """``IB_total = sum_k level_weights[k] * (kl_k + detector_weights[k] * mse_k)``, summed in level order."""
    total = None
    for kl, mse, w_mse, w_level in zip(kl_terms, mse_terms, detector_weights, level_weights):
        term = w_level * (kl + w_mse * mse)
        total = term if total is None else total + term
    return total


def level_rows(token_mask: Optional[torch.Tensor], detector_mask: Optional[torch.Tensor], level: int,
               lead: Sequence[int]) -> Optional[torch.Tensor]:
    """The rows (bool, shape ``lead``) over which level ``level``'s MSE averages; None: all rows.

    A row counts when its token is real (``token_mask``) and its example's detector of this level
    is present (``detector_mask[:, level]``, broadcast over the example's tokens).
    """
    if detector_mask is None:
        return token_mask
    present = detector_mask[..., level]
    present = present.reshape(tuple(present.shape) + (1,) * (len(lead) - present.dim())).expand(tuple(lead))
    return present if token_mask is None else token_mask & present


class ITHP(nn.Module):
    """Information-Theoretic Hierarchical Perception (reference implementation).

    Args:
        ITHP_args: the released model's argument dict (keys ``X0_dim`` … ``max_sen_len``, plus the
            level tuples for N != 2 levels) or an [`ithp_fast.ITHPConfig`][].
        eval_sampling: what ``forward`` does in eval mode. ``"sample"`` (default, the released
            behaviour) draws ``b = mu + eps*sigma`` in eval mode too; ``"mean"`` returns the
            posterior mean ``b = mu`` in eval mode. Training mode always samples.

    Modules: level k (k = 1 .. N) is ``encoder{k}`` (an ``Encoder``) and ``MLP{k}`` (a
    ``Detector``), the released names for levels 1 and 2 (``encoder3``, ``MLP3``, … after
    them), registered in level order; both are ``Sequential`` with the released state_dict keys,
    and name their layers (``first``, ``dropout``, ``last``; ``output_dropout`` of a detector).
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
        p, width = cfg.drop_prob, cfg.X0_dim
        for k, (latent, detector) in enumerate(zip(cfg.bottleneck_dims, cfg.detector_dims), start=1):
            self.add_module(f"encoder{k}", Encoder.of(width, cfg.inter_dim, latent, p))
            self.add_module(f"MLP{k}", Detector.of(latent, cfg.inter_dim, detector, p))
            width = latent

    def extra_repr(self) -> str:
        return f"eval_sampling={self.eval_sampling!r}"

    @property
    def samples_now(self) -> bool:
        """Whether ``forward`` draws ``b = mu + eps*sigma`` now (else ``b = mu``)."""
        return self.training or self.eval_sampling == "sample"

    def level_modules(self, level: int) -> LevelModules:
        """``(encoder, detector)`` of level ``level`` (0-based: level 0 is ``encoder1``, ``MLP1``)."""
        return LevelModules(getattr(self, f"encoder{level + 1}"), getattr(self, f"MLP{level + 1}"))

    def _first_param(self) -> Optional[torch.Tensor]:
        return next(self.parameters(), None)

    def _level(self, level: int, inp, target, eps, token_rows, detector_rows):
        encoder, detector = self.level_modules(level)
        mu, logvar = encoder(inp).chunk(2, dim=-1)
        kl = kl_to_standard_normal(mu, logvar, token_rows)
        if not self.samples_now:
            b = mu
        else:
            b = reparameterize(mu, logvar, torch.randn_like(mu) if eps is None else eps)
        mse = detector_mse(detector(b), target, detector_rows)
        return b, kl, mse

    def _levels(self, x, detectors, noise, token_mask, detector_mask):
        """The levels on checked inputs: ``(b_last, IB_total, kl_terms, mse_terms)``."""
        cfg = self.config
        lead = tuple(x.shape[:-1])
        b, kl_terms, mse_terms = x, [], []
        for k, target in enumerate(detectors):
            eps = noise[k] if noise is not None else None
            b, kl, mse = self._level(k, b, target, eps, token_mask, level_rows(token_mask, detector_mask, k, lead))
            kl_terms.append(kl)
            mse_terms.append(mse)
        IB_total = combine_ib(kl_terms, mse_terms, cfg.detector_weights, cfg.level_weights)
        return b, IB_total, tuple(kl_terms), tuple(mse_terms)

    def forward_levels(self, x: torch.Tensor, detectors: Sequence[torch.Tensor], *, noise: Noise = None,
                       token_mask: Optional[torch.Tensor] = None, detector_mask: Optional[torch.Tensor] = None):
        """Returns ``(b_last, IB_total, kl_terms, mse_terms)``: one KL and one MSE per level.

        ``detectors``: one tensor per level, in level order (``[..., detector_dims[k]]``, the leading
        shape of ``x``). ``noise``: one eps per level, shaped like that level's mean. ``token_mask``
        (x's leading shape, bool) and ``detector_mask`` (``[batch, N]``, bool): see the module docstring
        ([`ithp_fast.reference.ithp`][]).
        """
        detectors, noise = check_level_inputs(self.config, x, detectors, noise, token_mask, detector_mask,
                                              self._first_param())
        return self._levels(x, detectors, noise, token_mask, detector_mask)

    def forward(self, x: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor, *, noise: Noise = None,
                token_mask: Optional[torch.Tensor] = None, detector_mask: Optional[torch.Tensor] = None):
        """Returns ``(b1, IB_total, kl0, mse0, kl1, mse1)``; note the order ``x, visual, acoustic``.

        The released two-level call: level 1 predicts ``acoustic``, level 2 ``visual``.
        ``noise=(eps0, eps1)`` injects the Gaussian draws (shapes of ``mu0`` and ``mu1``);
        without it they come from torch's generator. Ignored where ``b = mu`` (eval mode with
        ``eval_sampling="mean"``). ``token_mask`` / ``detector_mask`` as in
        [`forward_levels`][ithp_fast.reference.ITHP.forward_levels] (``detector_mask`` columns in level
        order: acoustic, visual).
        """
        noise = check_forward_inputs(self.config, x, visual, acoustic, noise, self._first_param(), token_mask,
                                     detector_mask)
        b1, IB_total, (kl0, kl1), (mse0, mse1) = self._levels(x, (acoustic, visual), noise, token_mask,
                                                             detector_mask)
        return b1, IB_total, kl0, mse0, kl1, mse1

    def encode(self, x: torch.Tensor, *, sample: bool = False, noise: Noise = None) -> torch.Tensor:
        """The last level's ``b`` from the text features alone (the detectors are training-time machinery).

        ``sample=False``: the posterior-mean chain ``b = mu`` at every level.
        ``sample=True``: ``b = mu + eps*sigma`` at every level, as the released forward draws;
        ``noise`` (one eps per level) injects the draws.
        """
        noise = check_encode_inputs(self.config, x, noise, self._first_param())
        if noise is not None and not sample:
            raise ValueError("noise: given, but sample=False computes the posterior mean and uses no noise")
        b = x
        for k in range(self.config.levels):
            mu, logvar = self.level_modules(k).encoder(b).chunk(2, dim=-1)
            if sample:
                b = reparameterize(mu, logvar, torch.randn_like(mu) if noise is None else noise[k])
            else:
                b = mu
        return b

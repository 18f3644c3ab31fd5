"""Validation of forward / encode inputs, shared by every implementation.

Each check runs before any work so that a bad input gets a message naming the argument, the
expected width / shape / dtype and what was received, never a silent broadcast or a crash deep
inside a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from .config import ITHPConfig

Noise = Optional[Sequence[torch.Tensor]]


def _check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(
            f"{name}: expected a floating-point tensor (float32, bfloat16, float16 or float64), got dtype {t.dtype}"
        )
    if t.dim() < 1:
        raise ValueError(f"{name}: expected a tensor of shape [..., features], got a 0-dimensional tensor")
    return t


def _check_width(name: str, t: torch.Tensor, key: str, width: int, hint: str = "") -> None:
    if t.shape[-1] != width:
        raise ValueError(
            f"{name}: expected last dimension {key}={width}, got shape {tuple(t.shape)} "
            f"(last dimension {t.shape[-1]}).{hint}"
        )


def check_x(cfg: ITHPConfig, x: object, param: Optional[torch.Tensor]) -> torch.Tensor:
    """Check the prime-modality input against the config and the model's parameters."""
    x = _check_tensor("x", x)
    _check_width("x", x, "X0_dim", cfg.X0_dim)
    if param is not None:
        if x.device != param.device:
            raise ValueError(f"x: is on {x.device} but the model's parameters are on {param.device}")
        if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"x: dtype {x.dtype} differs from the model's parameters ({param.dtype}); "
                f"convert the model with .to({x.dtype}) or run under torch.autocast"
            )
    return x


def check_noise(noise: Noise, shapes: Sequence[tuple[int, ...]], device: torch.device) -> Optional[tuple]:
    """Check injected Gaussian noise: one tensor per level, shaped like that level's mean."""
    if noise is None:
        return None
    if isinstance(noise, torch.Tensor) or not isinstance(noise, Sequence) or len(noise) != len(shapes):
        raise TypeError(f"noise: expected a tuple of {len(shapes)} tensors (eps0, eps1), got {type(noise).__name__}")
    for i, (eps, shape) in enumerate(zip(noise, shapes)):
        name = f"noise[{i}] (eps{i})"
        _check_tensor(name, eps)
        if tuple(eps.shape) != tuple(shape):
            raise ValueError(f"{name}: expected shape {tuple(shape)} (the shape of mu{i}), got {tuple(eps.shape)}")
        if eps.device != device:
            raise ValueError(f"{name}: is on {eps.device} but x is on {device}")
    return tuple(noise)


def check_forward_inputs(
    cfg: ITHPConfig,
    x: object,
    visual: object,
    acoustic: object,
    noise: Noise = None,
    param: Optional[torch.Tensor] = None,
) -> Optional[tuple]:
    """Validate ``forward(x, visual, acoustic, noise=...)``; returns the checked noise (or None)."""
    x = check_x(cfg, x, param)
    visual = _check_tensor("visual", visual)
    acoustic = _check_tensor("acoustic", acoustic)
    order = (
        " ITHP.forward takes (x, visual, acoustic): visual (X2_dim={v}) comes before acoustic (X1_dim={a})."
    ).format(v=cfg.X2_dim, a=cfg.X1_dim)
    swapped = (
        visual.shape[-1] == cfg.X1_dim and acoustic.shape[-1] == cfg.X2_dim and cfg.X1_dim != cfg.X2_dim
    )
    hint = order + (" The two detectors look swapped." if swapped else "")
    _check_width("visual", visual, "X2_dim", cfg.X2_dim, hint)
    _check_width("acoustic", acoustic, "X1_dim", cfg.X1_dim, hint)
    lead = tuple(x.shape[:-1])
    for name, t in (("visual", visual), ("acoustic", acoustic)):
        if tuple(t.shape[:-1]) != lead:
            raise ValueError(
                f"{name}: leading dimensions {tuple(t.shape[:-1])} differ from x's {lead}; "
                f"all three inputs must share them (no broadcasting)"
            )
        if t.device != x.device:
            raise ValueError(f"{name}: is on {t.device} but x is on {x.device}")
    return check_noise(noise, [lead + (cfg.B0_dim,), lead + (cfg.B1_dim,)], x.device)


def check_encode_inputs(
    cfg: ITHPConfig, x: object, noise: Noise = None, param: Optional[torch.Tensor] = None
) -> Optional[tuple]:
    """Validate ``encode(x, noise=...)``; returns the checked noise (or None)."""
    x = check_x(cfg, x, param)
    lead = tuple(x.shape[:-1])
    return check_noise(noise, [lead + (cfg.B0_dim,), lead + (cfg.B1_dim,)], x.device)


def check_token_inputs(input_ids: object, attention_mask: Optional[torch.Tensor] = None) -> None:
    """Validate ``input_ids`` (integer ``[batch, tokens]``) and an optional mask of the same shape."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
        raise ValueError(
            f"input_ids: expected an integer tensor [batch, tokens], got "
            f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} {tuple(getattr(input_ids, 'shape', ()))}"
        )
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask: expected shape {tuple(input_ids.shape)} (that of input_ids), "
            f"got {tuple(attention_mask.shape)}"
        )

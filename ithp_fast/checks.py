"""Validation of forward / encode inputs, shared by every backend, and the words for the choice of one.

Each check runs before any work so that a bad input gets a message naming the argument, the
expected width / shape / dtype and what was received, never a silent broadcast or a crash deep
inside a kernel.

One vocabulary names what computes a result, everywhere (arguments, flags, settings, the
environment), and :func:`check_choice` validates every such choice:

``backend``   what computes ITHP and TCMax: :data:`BACKENDS` -- ``"triton"`` (fused Triton
              kernels), ``"torch"`` (fused PyTorch autograd Functions) or ``"reference"`` (the
              plain-PyTorch spec, :mod:`ithp_fast.reference`) -- or ``"auto"`` (per device).
              A fused op (:mod:`ithp_fast.kernels`) takes one of :data:`FUSED_BACKENDS`.
``runtime``   what runs a serving wrapper's CPU program: :data:`RUNTIMES` -- ``"torch"`` or
              ``"onnxruntime"`` -- or ``"auto"``.
``reference`` always the plain-PyTorch spec: the ``reference`` backend runs its code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import torch

from .config import ITHPConfig

Noise = Optional[Sequence[torch.Tensor]]

AUTO = "auto"
"""Choose per device (or, for a serving runtime, per model)."""
BACKENDS = ("triton", "torch", "reference")
"""What computes ITHP and TCMax (see the module docstring)."""
FUSED_BACKENDS = ("triton", "torch")
"""The backends of a fused op."""
RUNTIMES = ("torch", "onnxruntime")
"""What runs a serving wrapper's CPU program."""
BACKEND_CHOICES = (AUTO, *BACKENDS)
"""What a backend setting or argument takes."""
RUNTIME_CHOICES = (AUTO, *RUNTIMES)
"""What a runtime setting or argument takes."""
OLD_IMPL = {"fast": AUTO, "reference": "reference"}
"""``impl``, the old name of the ``backend`` setting (``--impl``, keyword arguments, config files and
checkpoints written before): each of its values as a backend."""


def check_choice(value: object, choices: Sequence[str], source: str) -> str:
    """``value`` when it is one of ``choices``; else one error naming ``source`` (the argument, flag,
    setting or environment variable it came from), the choices and the value."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{source}: expected one of {tuple(choices)}, got {value!r}")
    return value


def renamed_settings(values: Mapping, where: str) -> dict:
    """``values`` with a setting written under its old name moved to today's: ``impl`` (fast |
    reference) is ``backend`` (auto | reference). One error naming ``where`` for an unknown old
    value, or an old and a new value that disagree."""
    out = dict(values)
    if "impl" not in out:
        return out
    impl = out.pop("impl")
    if impl not in OLD_IMPL:
        raise ValueError(f"{where}: impl (the old name of backend): expected fast or reference, got {impl!r}")
    if out.get("backend") not in (None, OLD_IMPL[impl]):  # None: not given
        raise ValueError(f"{where}: impl={impl!r} (the old name of backend) and backend={out['backend']!r} disagree")
    out["backend"] = OLD_IMPL[impl]
    return out


def backend_argument(backend: Optional[str], impl: Optional[str] = None) -> Optional[str]:
    """A ``backend=`` argument, or ``impl=`` (its old name) as one; None when neither is given."""
    given = {k: v for k, v in (("backend", backend), ("impl", impl)) if v is not None}
    backend = renamed_settings(given, "backend").get("backend")
    return None if backend is None else check_choice(backend, BACKEND_CHOICES, "backend")


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


def _eps_names(levels: int) -> str:
    return ", ".join(f"eps{k}" for k in range(levels))


def check_noise(noise: Noise, shapes: Sequence[tuple[int, ...]], device: torch.device) -> Optional[tuple]:
    """Check injected Gaussian noise: one tensor per level, shaped like that level's mean."""
    if noise is None:
        return None
    if isinstance(noise, torch.Tensor) or not isinstance(noise, Sequence) or len(noise) != len(shapes):
        raise TypeError(f"noise: expected a tuple of {len(shapes)} tensors ({_eps_names(len(shapes))}), "
                        f"got {type(noise).__name__}" + (f" of {len(noise)}" if isinstance(noise, Sequence)
                                                         and not isinstance(noise, torch.Tensor) else ""))
    for i, (eps, shape) in enumerate(zip(noise, shapes)):
        name = f"noise[{i}] (eps{i})"
        _check_tensor(name, eps)
        if tuple(eps.shape) != tuple(shape):
            raise ValueError(f"{name}: expected shape {tuple(shape)} (the shape of mu{i}), got {tuple(eps.shape)}")
        if eps.device != device:
            raise ValueError(f"{name}: is on {eps.device} but x is on {device}")
    return tuple(noise)


def _noise_shapes(cfg: ITHPConfig, lead: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [lead + (width,) for width in cfg.bottleneck_dims]


def _check_bool_mask(name: str, mask: object, shape: tuple[int, ...], what: str, device: torch.device) -> None:
    expected = f"a bool tensor of shape {shape} ({what})"
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected {expected}, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name}: expected {expected}, got dtype {mask.dtype} (use mask.bool() or mask > 0)")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name}: expected {expected}, got shape {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name}: is on {mask.device} but x is on {device}")


def check_masks(cfg: ITHPConfig, lead: tuple[int, ...], token_mask: object, detector_mask: object,
                device: torch.device) -> None:
    """``token_mask``: bool, x's leading shape; ``detector_mask``: bool ``[batch, levels]``."""
    if token_mask is not None:
        _check_bool_mask("token_mask", token_mask, lead, "x's leading dimensions; True = a real token", device)
    if detector_mask is not None:
        shape = lead[:1] + (cfg.levels,)
        _check_bool_mask("detector_mask", detector_mask, shape,
                         f"[batch, levels] = x's first dimension by {cfg.levels} levels; True = present", device)


def _check_same_lead(name: str, t: torch.Tensor, x: torch.Tensor) -> None:
    lead = tuple(x.shape[:-1])
    if tuple(t.shape[:-1]) != lead:
        raise ValueError(
            f"{name}: leading dimensions {tuple(t.shape[:-1])} differ from x's {lead}; "
            f"x and the detectors must share them (no broadcasting)"
        )
    if t.device != x.device:
        raise ValueError(f"{name}: is on {t.device} but x is on {x.device}")


def check_forward_inputs(
    cfg: ITHPConfig,
    x: object,
    visual: object,
    acoustic: object,
    noise: Noise = None,
    param: Optional[torch.Tensor] = None,
    token_mask: object = None,
    detector_mask: object = None,
) -> Optional[tuple]:
    """Validate ``forward(x, visual, acoustic, noise=..., masks)``; returns the checked noise (or None)."""
    if cfg.levels != 2:
        raise ValueError(
            f"forward(x, visual, acoustic) is the released two-level call, but this model has {cfg.levels} "
            f"level(s); use forward_levels(x, detectors) with one detector per level, in level order"
        )
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
    for name, t in (("visual", visual), ("acoustic", acoustic)):
        _check_same_lead(name, t, x)
    lead = tuple(x.shape[:-1])
    check_masks(cfg, lead, token_mask, detector_mask, x.device)
    return check_noise(noise, _noise_shapes(cfg, lead), x.device)


def check_level_inputs(
    cfg: ITHPConfig,
    x: object,
    detectors: object,
    noise: Noise = None,
    token_mask: object = None,
    detector_mask: object = None,
    param: Optional[torch.Tensor] = None,
) -> tuple[tuple, Optional[tuple]]:
    """Validate ``forward_levels(x, detectors, noise=..., masks)``; returns ``(detectors, noise)`` as tuples."""
    x = check_x(cfg, x, param)
    n = cfg.levels
    expected = f"a sequence of {n} tensors, one per level in level order, widths detector_dims={cfg.detector_dims}"
    if isinstance(detectors, torch.Tensor) or not isinstance(detectors, Sequence):
        raise TypeError(f"detectors: expected {expected}, got {type(detectors).__name__}")
    if len(detectors) != n:
        raise ValueError(f"detectors: expected {expected}, got {len(detectors)} tensor(s)")
    for k, t in enumerate(detectors):
        name = f"detectors[{k}]"
        _check_tensor(name, t)
        _check_width(name, t, f"detector_dims[{k}]", cfg.detector_dims[k])
        _check_same_lead(name, t, x)
    lead = tuple(x.shape[:-1])
    check_masks(cfg, lead, token_mask, detector_mask, x.device)
    return tuple(detectors), check_noise(noise, _noise_shapes(cfg, lead), x.device)


def check_encode_inputs(
    cfg: ITHPConfig, x: object, noise: Noise = None, param: Optional[torch.Tensor] = None
) -> Optional[tuple]:
    """Validate ``encode(x, noise=...)``; returns the checked noise (or None)."""
    x = check_x(cfg, x, param)
    return check_noise(noise, _noise_shapes(cfg, tuple(x.shape[:-1])), x.device)


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

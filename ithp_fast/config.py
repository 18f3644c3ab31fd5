"""ITHPConfig: the model's hyper-parameters, with the paper's defaults and validation.

The keys are those of the released model's ``ITHP_args`` dict, so a dict written for the
released model converts with :meth:`ITHPConfig.from_dict` and back with :meth:`to_dict`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Union

# Visual (FACET) width per dataset in the word-aligned pickles the paper uses.
_VISUAL_DIM = {"mosi": 47, "mosei": 35}

_WIDTH_KEYS = ("X0_dim", "X1_dim", "X2_dim", "inter_dim", "B0_dim", "B1_dim", "max_sen_len")
_WEIGHT_KEYS = ("p_beta", "p_gamma", "p_lambda")


@dataclasses.dataclass(frozen=True)
class ITHPConfig:
    """Hyper-parameters of one ITHP module (names as in the released ``ITHP_args``)."""

    X0_dim: int = 768
    """Prime modality width (text hidden size)."""
    X1_dim: int = 74
    """First detector width (acoustic)."""
    X2_dim: int = 47
    """Second detector width (visual)."""
    inter_dim: int = 256
    """Hidden width of every two-layer MLP."""
    B0_dim: int = 128
    """First latent width."""
    B1_dim: int = 64
    """Second latent width."""
    drop_prob: float = 0.3
    """Dropout probability inside the MLPs, in [0, 1)."""
    p_beta: float = 8.0
    """Weight of the level-0 reconstruction error."""
    p_gamma: float = 32.0
    """Weight of the level-1 reconstruction error."""
    p_lambda: float = 0.3
    """Weight of level 1 in the total."""
    max_sen_len: int = 50
    """Accepted for compatibility; unused by the computation."""

    def __post_init__(self) -> None:
        for key in _WIDTH_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ITHP config: {key} must be an int, got {type(value).__name__} ({value!r})")
            if value <= 0:
                raise ValueError(f"ITHP config: {key} must be a positive width, got {value}")
        for key in ("drop_prob",) + _WEIGHT_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"ITHP config: {key} must be a number, got {type(value).__name__} ({value!r})")
            if not math.isfinite(value):
                raise ValueError(f"ITHP config: {key} must be finite, got {value}")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"ITHP config: drop_prob must lie in [0, 1), got {self.drop_prob}")

    @classmethod
    def for_dataset(cls, name: str, **overrides: Any) -> "ITHPConfig":
        """The paper's configuration for ``"mosi"`` (visual 47) or ``"mosei"`` (visual 35)."""
        key = name.lower()
        if key not in _VISUAL_DIM:
            raise ValueError(f"ITHPConfig.for_dataset: unknown dataset {name!r}; expected one of {sorted(_VISUAL_DIM)}")
        return cls(**{"X2_dim": _VISUAL_DIM[key], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The released model's ``ITHP_args`` dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, args: Mapping[str, Any]) -> "ITHPConfig":
        """Build from an ``ITHP_args`` dict; every key must be present and known."""
        if not isinstance(args, Mapping):
            raise TypeError(f"ITHP config: expected a dict of ITHP_args or an ITHPConfig, got {type(args).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in names if k not in args]
        unknown = sorted(str(k) for k in args if k not in names)
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unknown:
                parts.append(f"unknown keys {unknown}")
            raise KeyError(f"ITHP config: {' and '.join(parts)}; the keys are {names}")
        return cls(**{k: args[k] for k in names})


ConfigLike = Union[ITHPConfig, Mapping[str, Any]]


def as_config(args: ConfigLike) -> ITHPConfig:
    """Accept an :class:`ITHPConfig` or the released model's plain argument dict."""
    if isinstance(args, ITHPConfig):
        return args
    return ITHPConfig.from_dict(args)

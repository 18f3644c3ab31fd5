"""ITHPConfig: the model's hyper-parameters, with the paper's defaults and validation.

Two descriptions of the same thing, one truth:

* the **level tuples** ``detector_dims``, ``bottleneck_dims``, ``detector_weights`` and
  ``level_weights``, one entry per level (N levels, N >= 1), are what the model is built from;
* the **released fields** ``X1_dim``, ``X2_dim``, ``B0_dim``, ``B1_dim``, ``p_beta``, ``p_gamma``
  and ``p_lambda`` (the keys of the released model's ``ITHP_args`` dict) name the entries of the
  first two levels: ``detector_dims = (X1_dim, X2_dim, ...)``, ``bottleneck_dims = (B0_dim,
  B1_dim, ...)``, ``detector_weights = (p_beta, p_gamma, ...)``, ``level_weights[1] = p_lambda``.

Give either for each quantity (or both, agreeing): a tuple left out is built from the released
fields (two levels, the paper's values by default); a released field left out is read off the tuple
(None where the model has no such level). ``level_weights`` left out is ``(1, p_lambda,
p_lambda², ...)``. After construction both descriptions are filled in and agree.

[`ITHPConfig.to_dict`][ithp_fast.ITHPConfig.to_dict] gives exactly the released keys for a config the released model can
express (two levels, ``level_weights == (1, p_lambda)``), and the released keys plus the four level
tuples otherwise; [`ITHPConfig.from_dict`][ithp_fast.ITHPConfig.from_dict] reads both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

# Visual (FACET) width per dataset in the word-aligned pickles the paper uses.
_VISUAL_DIM = {"mosi": 47, "mosei": 35}

RELEASED_KEYS = ("X0_dim", "X1_dim", "X2_dim", "inter_dim", "B0_dim", "B1_dim", "drop_prob", "p_beta", "p_gamma",
                 "p_lambda", "max_sen_len")
"""The keys of the released model's ``ITHP_args`` dict, in its order."""
LEVEL_KEYS = ("detector_dims", "bottleneck_dims", "detector_weights", "level_weights")
"""The per-level tuples (one entry per level)."""

# tuple -> (its released fields for levels 1 and 2, the paper's values)
_PAIRS = {
    "detector_dims": (("X1_dim", "X2_dim"), (74, 47)),
    "bottleneck_dims": (("B0_dim", "B1_dim"), (128, 64)),
    "detector_weights": (("p_beta", "p_gamma"), (8.0, 32.0)),
}
_DEFAULT_LAMBDA = 0.3


def _error(key: str, message: str, kind: type = ValueError) -> Exception:
    return kind(f"ITHP config: {key}{'' if message.startswith('=') else ' '}{message}")


def _check_width(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(key, f"must be an int, got {type(value).__name__} ({value!r})", TypeError)
    if value <= 0:
        raise _error(key, f"must be a positive width, got {value}")


def _check_weight(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(key, f"must be a number, got {type(value).__name__} ({value!r})", TypeError)
    if not math.isfinite(value):
        raise _error(key, f"must be finite, got {value}")
    if value < 0:
        raise _error(key, f"must be a non-negative weight, got {value}")


def _as_tuple(key: str, value: object) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _error(key, f"must be a sequence with one entry per level, got {type(value).__name__} ({value!r})",
                     TypeError)
    if len(value) == 0:
        raise _error(key, "must have at least one entry (one per level), got none")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class ITHPConfig:
    """Hyper-parameters of one ITHP module: N levels, each a bottleneck and the detector it predicts.

    The released two-level fields and the level tuples describe the same numbers (see the module
    docstring, [`ithp_fast.config`][]); ``ITHPConfig()`` is the paper's MOSI model, two levels
    (acoustic, then visual).
    """

    X0_dim: int = 768
    """Prime modality width (text hidden size)."""
    X1_dim: Optional[int] = None
    """Width of the first level's detector (``detector_dims[0]``; default 74, acoustic)."""
    X2_dim: Optional[int] = None
    """Width of the second level's detector (``detector_dims[1]``; default 47, visual)."""
    inter_dim: int = 256
    """Hidden width of every two-layer MLP."""
    B0_dim: Optional[int] = None
    """First latent width (``bottleneck_dims[0]``; default 128)."""
    B1_dim: Optional[int] = None
    """Second latent width (``bottleneck_dims[1]``; default 64)."""
    drop_prob: float = 0.3
    """Dropout probability inside the MLPs, in [0, 1)."""
    p_beta: Optional[float] = None
    """Weight of the first level's reconstruction error (``detector_weights[0]``; default 8)."""
    p_gamma: Optional[float] = None
    """Weight of the second level's reconstruction error (``detector_weights[1]``; default 32)."""
    p_lambda: Optional[float] = None
    """Weight of the second level in the total (``level_weights[1]``; default 0.3)."""
    max_sen_len: int = 50
    """Accepted for compatibility; unused by the computation."""
    detector_dims: Optional[tuple[int, ...]] = None
    """Detector width of each level, in level order."""
    bottleneck_dims: Optional[tuple[int, ...]] = None
    """Latent width of each level, in level order; the last is the width of the output ``b``."""
    detector_weights: Optional[tuple[float, ...]] = None
    """Weight of each level's reconstruction error inside its IB term."""
    level_weights: Optional[tuple[float, ...]] = None
    """Weight of each level's IB term in the total; None: ``(1, p_lambda, p_lambda², ...)``."""

    def __post_init__(self) -> None:
        for key in ("X0_dim", "inter_dim", "max_sen_len"):
            _check_width(key, getattr(self, key))
        if isinstance(self.drop_prob, bool) or not isinstance(self.drop_prob, (int, float)):
            raise _error("drop_prob", f"must be a number, got {type(self.drop_prob).__name__} ({self.drop_prob!r})",
                         TypeError)
        if not 0.0 <= self.drop_prob < 1.0:
            raise _error("drop_prob", f"must lie in [0, 1), got {self.drop_prob}")
        for tuple_key, (fields, defaults) in _PAIRS.items():
            self._resolve_pair(tuple_key, fields, defaults)
        self._resolve_level_weights()
        lengths = {key: len(getattr(self, key)) for key in LEVEL_KEYS}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{key} has {n}" for key, n in lengths.items())
            raise ValueError(f"ITHP config: the level tuples must have one entry per level, the same count; "
                             f"{described}")
        for key in ("detector_dims", "bottleneck_dims"):
            for k, value in enumerate(getattr(self, key)):
                _check_width(f"{key}[{k}]", value)
        for key in ("detector_weights", "level_weights"):
            for k, value in enumerate(getattr(self, key)):
                _check_weight(f"{key}[{k}]", value)

    def _set(self, key: str, value: Any) -> None:
        object.__setattr__(self, key, value)

    def _resolve_pair(self, tuple_key: str, fields: tuple[str, str], defaults: tuple) -> None:
        """Fill in a level tuple and its two released fields from whichever was given."""
        given = getattr(self, tuple_key)
        check = _check_width if tuple_key.endswith("dims") else _check_weight
        if given is None:
            values = []
            for field, default in zip(fields, defaults):
                value = getattr(self, field)
                value = default if value is None else value
                check(field, value)
                self._set(field, value)
                values.append(value)
            self._set(tuple_key, tuple(values))
        else:
            levels = _as_tuple(tuple_key, given)
            self._set(tuple_key, levels)
            for k, field in enumerate(fields):
                value = getattr(self, field)
                if value is None:
                    self._set(field, levels[k] if k < len(levels) else None)
                elif k >= len(levels):
                    raise _error(field, f"describes level {k + 1}, but {tuple_key} has {len(levels)} level(s) only")
                elif value != levels[k]:
                    raise _error(field, f"={value!r} differs from {tuple_key}[{k}]={levels[k]!r}; give one of them "
                                        f"(or both, agreeing)")

    def _resolve_level_weights(self) -> None:
        levels = len(self.detector_dims)
        if self.p_lambda is not None:
            _check_weight("p_lambda", self.p_lambda)
        if self.level_weights is None:
            ratio = _DEFAULT_LAMBDA if self.p_lambda is None else self.p_lambda
            self._set("p_lambda", ratio)
            self._set("level_weights", tuple([1.0] + [ratio ** k for k in range(1, levels)]))
            return
        weights = _as_tuple("level_weights", self.level_weights)
        self._set("level_weights", weights)
        if self.p_lambda is None:
            self._set("p_lambda", weights[1] if len(weights) > 1 else _DEFAULT_LAMBDA)
        elif len(weights) > 1 and self.p_lambda != weights[1]:
            raise _error("p_lambda", f"={self.p_lambda!r} differs from level_weights[1]={weights[1]!r}; give one of "
                                     f"them (or both, agreeing)")

    @property
    def levels(self) -> int:
        """The number of levels N."""
        return len(self.detector_dims)

    @property
    def released(self) -> bool:
        """Whether the released two-level model expresses this config (``to_dict`` gives only its keys)."""
        return self.levels == 2 and tuple(self.level_weights) == (1.0, self.p_lambda)

    @classmethod
    def for_dataset(cls, name: str, **overrides: Any) -> "ITHPConfig":
        """The paper's configuration for ``"mosi"`` (visual 47) or ``"mosei"`` (visual 35)."""
        key = name.lower()
        if key not in _VISUAL_DIM:
            raise ValueError(f"ITHPConfig.for_dataset: unknown dataset {name!r}; expected one of {sorted(_VISUAL_DIM)}")
        if "detector_dims" in overrides:
            return cls(**overrides)
        return cls(**{"X2_dim": _VISUAL_DIM[key], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The released model's ``ITHP_args`` dict; plus the level tuples (as lists) when the
        released keys alone cannot express this config (N != 2, or other level weights)."""
        out = {key: getattr(self, key) for key in RELEASED_KEYS}
        if not self.released:
            out.update({key: list(getattr(self, key)) for key in LEVEL_KEYS})
        return out

    @classmethod
    def from_dict(cls, args: Mapping[str, Any]) -> "ITHPConfig":
        """Build from an ``ITHP_args`` dict: every released key must be present (None allowed for
        a level the model does not have); the level tuples are optional."""
        if not isinstance(args, Mapping):
            raise TypeError(f"ITHP config: expected a dict of ITHP_args or an ITHPConfig, got {type(args).__name__}")
        missing = [k for k in RELEASED_KEYS if k not in args]
        unknown = sorted(str(k) for k in args if k not in RELEASED_KEYS and k not in LEVEL_KEYS)
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unknown:
                parts.append(f"unknown keys {unknown}")
            raise KeyError(f"ITHP config: {' and '.join(parts)}; the keys are {list(RELEASED_KEYS)} "
                           f"(and optionally {list(LEVEL_KEYS)})")
        return cls(**{k: (tuple(v) if k in LEVEL_KEYS and isinstance(v, list) else v) for k, v in args.items()})


ConfigLike = Union[ITHPConfig, Mapping[str, Any]]


def as_config(args: ConfigLike) -> ITHPConfig:
    """Accept an :class:`ITHPConfig` or the released model's plain argument dict."""
    if isinstance(args, ITHPConfig):
        return args
    return ITHPConfig.from_dict(args)

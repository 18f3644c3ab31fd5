"""Counter-based noise: every random number is a pure function of (seed, stream, element index).

One forward draws ONE seed; every random draw of that forward is then addressed by a
:class:`Stream` (which tensor it is for) and the index of the element in that tensor's row-major
order. The backward regenerates the same numbers from the same address instead of storing them.

Two generators keep that contract, one per backend:

``triton``  the seed is an int64 tensor on the input's device (:func:`draw_seed`, from torch's
            generator for that device: ``torch.manual_seed`` reproduces it, a CUDA-graph replay
            draws a fresh one). Philox4x32-10 keyed by the seed, in the kernels
            (``triton_helpers.py``)::

                element e  ->  group g = e // GROUP,  lane k = (e % GROUP) // LANE,  column j = e % LANE
                counter    =   g*LANE + j   (int64, split into two 32-bit words), stream in the third word
                word       =   word k of philox(seed, (counter_lo, counter_hi, stream, 0))
                uniform    =   (word >> 8) * 2^-24                     in [0, 1);  dropout keeps u >= p
                normal     =   Box-Muller on the word pairs (0, 1) and (2, 3)

            so one Philox call feeds four elements, and a kernel that owns an aligned group of
            ``GROUP`` consecutive elements loads them as four contiguous lanes.
``torch``   the seed is a Python int (:func:`new_seed`, from torch's CPU generator, so nothing
            reads a device tensor back to the host); stream ``s`` of seed ``n`` is a
            ``torch.Generator`` seeded from ``(n, s)`` (:func:`torch_generator`). Other numbers,
            same contract.

This module imports no Triton: the CPU paths use it alone.
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple, Union

import torch

LANE = 256
"""Elements per lane of a Philox group: one Philox call's four words feed four lanes."""
GROUP = 4 * LANE
"""Elements per Philox group (aligned: a group starts at a multiple of ``GROUP``)."""

_MASK64 = (1 << 64) - 1


class Stream(enum.IntEnum):
    """What a random number is for: the third Philox counter word."""

    ENCODER1_HIDDEN = 1
    EPS0 = 2
    MLP1_HIDDEN = 3
    MLP1_OUTPUT = 4
    ENCODER2_HIDDEN = 5
    EPS1 = 6
    MLP2_HIDDEN = 7
    MLP2_OUTPUT = 8


STREAMS_PER_LEVEL = 4


class LevelStreams(NamedTuple):
    """The four streams of one level, in the order of its computation."""

    encoder_hidden: int
    eps: int
    detector_hidden: int
    detector_output: int


def level_streams(level: int) -> LevelStreams:
    """The streams of level ``level`` (0-based): ``4*level + 1 .. 4*level + 4``.

    Levels 0 and 1 are the ``Stream`` members (``ENCODER1_HIDDEN`` .. ``MLP2_OUTPUT``), so the
    released two-level model draws the same numbers as before levels 3+ existed; level 2 takes
    streams 9..12, and so on.
    """
    if level < 0:
        raise ValueError(f"level: expected a non-negative level index, got {level}")
    first = STREAMS_PER_LEVEL * level + 1
    return LevelStreams(*(Stream(s) if s <= Stream.MLP2_OUTPUT else s for s in range(first, first + 4)))


def draw_seed(device: Union[torch.device, str]) -> torch.Tensor:
    """The ``triton`` backend's seed: one int64 (shape ``[1]``) on ``device`` from torch's generator."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device)


def new_seed() -> int:
    """The ``torch`` backend's seed, drawn from torch's CPU generator (``torch.manual_seed`` reproduces it)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def torch_generator(seed: int, stream: int, device: Union[torch.device, str]) -> torch.Generator:
    """A ``torch.Generator`` for the torch backend's stream ``stream`` of forward seed ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(_splitmix64(_splitmix64(int(seed)) ^ int(stream)) >> 1)
    return g


def normal(seed: int, stream: int, shape, device) -> torch.Tensor:
    """The torch backend's N(0, 1) draws for ``(seed, stream)`` (float32, ``shape``)."""
    g = torch_generator(seed, stream, device)
    return torch.empty(shape, dtype=torch.float32, device=device).normal_(generator=g)


def dropout_scale(seed: int, stream: int, shape, device, p: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The torch backend's dropout multiplier for ``(seed, stream)``: ``1/(1-p)`` where kept, 0
    where dropped (``dtype``, float32 by default; ``shape``).

    One uniform 32-bit word per element (random 64-bit words split in two: the fastest draw on a
    CPU), read as a signed int ``w``; the element is kept when
    ``float(w) >= float(ceil(p * 2^32) - 2^31)`` (probability ``1 - p`` up to float rounding at
    the threshold).
    """
    numel = math.prod(shape)
    words = torch.empty((numel + 1) // 2, dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=torch_generator(seed, stream, device))
    threshold = float(math.ceil(p * 2**32) - 2**31)
    scale = words.view(torch.int32)[:numel].view(shape).to(torch.float32)
    return scale.ge_(threshold).to(dtype).mul_(1.0 / (1.0 - p))

"""How big the benchmark workloads are on this machine (importable by every ``bench_*.py``).

Sizes must be known when pytest collects the parametrised benchmarks, before any fixture runs,
so they live here rather than in a fixture::

    from scale import DEVICE, SCALE, pick, compiled

    @pytest.mark.parametrize("batch", pick(cuda=[1, 8, 32, 128, 1024], cpu=[1, 32, 128], tiny=[2]))
    def bench_something(measure, batch): ...

``SCALE`` is one of

``"cuda"``  a CUDA device is present: the paper's sizes, every batch size of the issue;
``"cpu"``   no CUDA: fewer, smaller batches so that the whole suite ends within 10 minutes on 2 cores;
``"tiny"``  ``ITHP_BENCH_TINY=1``: the smallest shapes, one call per benchmark (the CI smoke test).

``ITHP_BENCH_COMPILE=0`` drops every ``torch.compile`` provider (they cost compile time).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

import torch

T = TypeVar("T")


def _flag(name: str, default: str = "0") -> bool:
    return os.environ.get(name, default).strip().lower() not in ("", "0", "false", "no", "off")


TINY: bool = _flag("ITHP_BENCH_TINY")
"""Smoke-test sizes (``ITHP_BENCH_TINY=1``)."""

CUDA: bool = torch.cuda.is_available()
"""Whether the benchmarks run on a CUDA device."""

DEVICE: str = "cuda" if CUDA else "cpu"
"""The device every workload is built on."""

SCALE: str = "tiny" if TINY else ("cuda" if CUDA else "cpu")
"""``"cuda"``, ``"cpu"`` or ``"tiny"``."""

COMPILE: bool = _flag("ITHP_BENCH_COMPILE", "1")
"""Whether the ``torch.compile`` providers run (``ITHP_BENCH_COMPILE=0`` drops them)."""

CHECK: bool = _flag("ITHP_BENCH_CHECK")
"""Check mode (``ITHP_BENCH_CHECK=1``, the CI smoke run): the workloads are made deterministic
(no dropout, posterior means, injected noise) and every provider's result is compared with its
group's ``reference`` (``measure(..., compare=...)`` in ``conftest.py``)."""

TOKENS: int = 5 if TINY else 50
"""Tokens per example (the paper's 50; 5 in tiny mode)."""


def pick(*, cuda: Sequence[T], cpu: Sequence[T], tiny: Sequence[T]) -> list[T]:
    """The list for the current :data:`SCALE` (use it in ``pytest.mark.parametrize``)."""
    return list({"cuda": cuda, "cpu": cpu, "tiny": tiny}[SCALE])


def compiled(fn: Callable, *, mode: str | None = None, **kwargs) -> Callable:
    """``torch.compile(fn)`` for a ``reference+torch.compile``-style provider.

    In tiny mode the ``"eager"`` backend is used: Dynamo still traces the function (so a graph
    break or a tracing error fails the smoke test) without paying Inductor's compile time.
    ``mode`` is ignored on the CPU, where ``"reduce-overhead"`` (CUDA graphs) does not apply.
    """
    if TINY:
        return torch.compile(fn, backend="eager", **kwargs)
    if not CUDA:
        mode = None
    return torch.compile(fn, mode=mode, **kwargs)

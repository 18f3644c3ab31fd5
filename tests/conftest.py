"""Shared test setup.

Without CUDA, the Triton kernels run in Triton's interpreter: ``TRITON_INTERPRET`` must be set
before ``triton`` is first imported, so it is set here, before any test module loads.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def small_config(**overrides):
    """A small ITHP config for fast tests (odd widths on purpose)."""
    from ithp_fast import ITHPConfig

    base = dict(X0_dim=24, X1_dim=7, X2_dim=5, inter_dim=16, B0_dim=8, B1_dim=6, drop_prob=0.3)
    base.update(overrides)
    return ITHPConfig(**base)

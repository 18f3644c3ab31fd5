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


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



def pytest_runtest_logreport(report) -> None:
    """With ``ITHP_TEST_FAILURE_LOG=FILE``, append each failure's report to FILE as it happens
    (a run cut short by a time limit still leaves its tracebacks behind)."""
    path = os.environ.get("ITHP_TEST_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a") as log:
            log.write(f"==== {report.nodeid} ({report.when})\n{report.longreprtext[-4000:]}\n")

"""The shared Triton helpers (ithp_fast/kernels/triton_helpers.py) that are not noise (see test_rng.py)."""

import pytest
import torch
import triton
import triton.language as tl

from ithp_fast.backends import triton_interpreter_on
from ithp_fast.kernels.triton_helpers import offsets_2d

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and not triton_interpreter_on(),
                                reason="Triton needs CUDA or its interpreter")


@triton.jit
def _offsets_kernel(rows_ptr, cols_ptr, out_ptr, stride_rows, stride_cols, R: tl.constexpr, C: tl.constexpr):
    r, c = tl.arange(0, R), tl.arange(0, C)
    values = offsets_2d(tl.load(rows_ptr + r), tl.load(cols_ptr + c), stride_rows, stride_cols)
    tl.store(out_ptr + r[:, None] * C + c[None, :], values)


@pytest.mark.parametrize("stride_rows, stride_cols", [(1, 2**16), (2**20, 1), (70_001, 40_009), (2**31 - 1, 3)])
def test_offsets_2d_pass_2_to_the_31_in_64_bits(stride_rows, stride_cols):
    """Every factor is a 32-bit value (int32 indices; strides below 2^31 arrive as int32) and the
    products reach 2^47: the sums must be the exact int64 values."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = torch.tensor([0, 1, 2, 40_000, 65_535, 70_000, 99_999, 123_457], dtype=torch.int32, device=device)
    cols = torch.tensor([0, 1, 7, 32_767, 40_000, 65_536, 100_000, 2**30], dtype=torch.int32, device=device)
    got = torch.empty(8, 8, dtype=torch.int64, device=device)
    _offsets_kernel[(1,)](rows, cols, got, stride_rows, stride_cols, R=8, C=8)
    want = rows.long()[:, None] * stride_rows + cols.long()[None, :] * stride_cols
    assert int(want.max()) > 2**31
    torch.testing.assert_close(got, want, rtol=0, atol=0)

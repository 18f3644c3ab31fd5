"""float32 -> the output dtype with round-to-nearest-even, the same in Triton's interpreter and on a GPU.

The GPU rounds float32 -> bfloat16 to nearest-even; Triton's CPU interpreter truncates, which
biases every bfloat16 output towards zero and would make the CPU tests measure the interpreter.
Rounding the float32 bits first makes the final conversion exact on both.
"""

import triton
import triton.language as tl


# bfloat16 keeps the top 16 bits of a float32: add half an ulp (ties to even) and clear the rest
@triton.jit
def rounded_to(value, dtype: tl.constexpr):
    """``value`` (float32) converted to ``dtype``, rounding to nearest-even."""
    if dtype == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        value = tl.where(value == value, bits.to(tl.float32, bitcast=True), value)
    return value.to(dtype)

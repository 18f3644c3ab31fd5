"""Fused Triton kernels, one op per file (installed as ``ithp_fast.kernels``)."""

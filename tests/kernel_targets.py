"""Compile every fused kernel for an sm_90 GPU without a GPU (Triton frontend + ptxas).

The CPU tests run the kernels in Triton's interpreter, which accepts some programs the compiler
rejects; compiling them here catches that on a machine without CUDA. Run as a script (the
interpreter must be off when Triton is imported): prints one line per kernel, exits 1 on failure.
"""

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ithp_fast.kernels import detector_loss, ib_combine, relu_dropout, reparam_kl, rng

Q = rng.QUARTER


def variants(dt):
    """(name, kernel, signature, constexprs) for element dtype ``dt`` ('fp32' / 'bf16')."""
    p = f"*{dt}"
    out = []
    for dropout in (True, False):
        out.append((f"relu_dropout forward dropout={dropout}", relu_dropout._relu_dropout_forward_kernel,
                    dict(a_ptr=p, d_ptr=p, seed_ptr="*i64", numel="i32", start="i64", p="fp32", scale="fp32"),
                    dict(STREAM=1, DROPOUT=dropout, QUARTER=Q)))
    out.append(("relu_dropout backward", relu_dropout._relu_dropout_backward_kernel,
                dict(gd_ptr=p, d_ptr=p, ga_ptr=p, numel="i32", scale="fp32"), dict(BLOCK=1024)))
    for sample, has_eps in ((True, False), (True, True), (False, False)):
        generate = sample and not has_eps
        out.append((f"reparam_kl forward sample={sample} eps={has_eps}", reparam_kl._reparam_kl_forward_kernel,
                    dict(h_ptr=p, eps_ptr=p, seed_ptr="*i64", b_ptr=p, part_ptr="*fp32", n_elem="i32", row_stride="i32",
                         kl_scale="fp32"),
                    dict(STREAM=2, B=47, SAMPLE=sample, HAS_EPS=has_eps, GENERATE=generate, QUARTER=Q)))
        out.append((f"reparam_kl backward sample={sample} eps={has_eps}", reparam_kl._reparam_kl_backward_kernel,
                    dict(h_ptr=p, eps_ptr=p, seed_ptr="*i64", gb_ptr=p, gpart_ptr="*fp32", gpart_stride="i32", gh_ptr=p,
                         geps_ptr=p, n_elem="i32", row_stride="i32", kl_scale="fp32"),
                    dict(STREAM=2, B=128, SAMPLE=sample, HAS_EPS=has_eps, GENERATE=generate, HAS_GRAD_B=True,
                         HAS_GRAD_PART=True, NEED_GRAD_EPS=has_eps, QUARTER=Q)))
    for dropout in (True, False):
        out.append((f"detector_loss forward dropout={dropout}", detector_loss._detector_loss_forward_kernel,
                    dict(z_ptr=p, t_ptr=p, seed_ptr="*i64", part_ptr="*fp32", numel="i32", p="fp32", scale="fp32",
                         inv_numel="fp32"),
                    dict(STREAM=4, DROPOUT=dropout, QUARTER=Q)))
        out.append((f"detector_loss backward dropout={dropout}", detector_loss._detector_loss_backward_kernel,
                    dict(z_ptr=p, t_ptr=p, seed_ptr="*i64", gpart_ptr="*fp32", gpart_stride="i32", gz_ptr=p, gt_ptr=p,
                         numel="i32", p="fp32", scale="fp32", two_over_numel="fp32"),
                    dict(STREAM=4, DROPOUT=dropout, NEED_GRAD_T=dropout, QUARTER=Q)))
    out.append(("ib_combine forward", ib_combine._ib_combine_forward_kernel,
                dict(p0="*fp32", n0="i32", p1="*fp32", n1="i32", p2="*fp32", n2="i32", p3="*fp32", n3="i32", out_ib=p,
                     out0=p, out1=p, out2=p, out3=p, w0="fp32", w1="fp32", w2="fp32", w3="fp32"), dict(BLOCK=1024)))
    out.append(("ib_combine backward", ib_combine._ib_combine_backward_kernel,
                dict(g_ib=p, g0=p, g1=p, g2=p, g3=p, out_ptr="*fp32", w0="fp32", w1="fp32", w2="fp32", w3="fp32"),
                dict(HAS_IB=True, HAS0=True, HAS1=False, HAS2=True, HAS3=False)))
    return out


def stream_variants():
    return [(f"rng stream normal={normal}", rng._stream_kernel,
             dict(seed_ptr="*i64", out_ptr="*fp32", numel="i32", start="i64"),
             dict(STREAM=1, NORMAL=normal, QUARTER=Q, BLOCK=1024)) for normal in (True, False)]


def main() -> int:
    target = GPUTarget("cuda", 90, 32)
    failed = 0
    for name, kernel, signature, constexprs in variants("fp32") + variants("bf16") + stream_variants():
        signature = dict(signature, **{k: "constexpr" for k in constexprs})
        try:
            triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs), target=target)
            print("ok", name)
        except Exception as err:  # report every kernel, then fail
            failed += 1
            print("FAILED", name, f"{type(err).__name__}: {err}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

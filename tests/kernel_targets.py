"""Compile every fused kernel for an sm_90 GPU without a GPU (Triton frontend + ptxas).

The CPU tests run the kernels in Triton's interpreter, which accepts some programs the compiler
rejects; compiling them here catches that on a machine without CUDA. Run as a script (the
interpreter must be off when Triton is imported): prints one line per kernel, exits 1 on failure.
"""

import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ithp_fast.kernels import detector_loss_triton as detector_loss
from ithp_fast.kernels import encode_chain_triton as encode_chain
from ithp_fast.kernels import ib_combine_triton as ib_combine
from ithp_fast.kernels import relu_dropout_triton as relu_dropout
from ithp_fast.kernels import reparam_kl_triton as reparam_kl
from ithp_fast.kernels import tcmax_triton as tcmax
from ithp_fast.kernels import triton_helpers
from ithp_fast.kernels.encode_chain import PRECISIONS
from ithp_fast.kernels.rng import LANE


def variants(dt):
    """(name, kernel, signature, constexprs) for element dtype ``dt`` ('fp32' / 'bf16')."""
    p = f"*{dt}"
    out = []
    for dropout in (True, False):
        out.append((f"relu_dropout forward dropout={dropout}", relu_dropout._relu_dropout_forward_kernel,
                    dict(a_ptr=p, d_ptr=p, seed_ptr="*i64", numel="i32", start="i64", p="fp32", scale="fp32"),
                    dict(STREAM=1, DROPOUT=dropout, LANE=LANE)))
    out.append(("relu_dropout backward", relu_dropout._relu_dropout_backward_kernel,
                dict(gd_ptr=p, d_ptr=p, ga_ptr=p, numel="i32", scale="fp32"), dict(BLOCK=1024)))
    for (sample, has_eps), weighted in zip(((True, False), (True, True), (False, False)), (False, True, True)):
        generate = sample and not has_eps
        name = f"sample={sample} eps={has_eps} weighted={weighted}"
        out.append((f"reparam_kl forward {name}", reparam_kl._reparam_kl_forward_kernel,
                    dict(h_ptr=p, eps_ptr=p, seed_ptr="*i64", w_ptr="*fp32", b_ptr=p, part_ptr="*fp32", n_elem="i32",
                         row_stride="i32", s="fp32"),
                    dict(STREAM=2, B=47, SAMPLE=sample, HAS_EPS=has_eps, GENERATE=generate, HAS_WEIGHT=weighted,
                         LANE=LANE)))
        out.append((f"reparam_kl backward {name}", reparam_kl._reparam_kl_backward_kernel,
                    dict(h_ptr=p, eps_ptr=p, seed_ptr="*i64", w_ptr="*fp32", gb_ptr=p, gpart_ptr="*fp32",
                         gpart_stride="i32", gh_ptr=p, geps_ptr=p, n_elem="i32", row_stride="i32", s="fp32"),
                    dict(STREAM=2, B=128, SAMPLE=sample, HAS_EPS=has_eps, GENERATE=generate, HAS_GRAD_B=True,
                         HAS_GRAD_PART=not has_eps, NEED_GRAD_EPS=has_eps, HAS_WEIGHT=weighted,
                         LANE=LANE)))  # with and without a KL gradient
    for dropout, weighted in ((True, False), (False, True), (True, True)):
        name = f"dropout={dropout} weighted={weighted}"
        out.append((f"detector_loss forward {name}", detector_loss._detector_loss_forward_kernel,
                    dict(z_ptr=p, t_ptr=p, seed_ptr="*i64", w_ptr="*fp32", part_ptr="*fp32", numel="i32", width="i32",
                         p="fp32", scale="fp32", s="fp32"),
                    dict(STREAM=4, DROPOUT=dropout, HAS_WEIGHT=weighted, LANE=LANE)))
        out.append((f"detector_loss backward {name}", detector_loss._detector_loss_backward_kernel,
                    dict(z_ptr=p, t_ptr=p, seed_ptr="*i64", w_ptr="*fp32", gpart_ptr="*fp32", gpart_stride="i32",
                         gz_ptr=p, gt_ptr=p, numel="i32", width="i32", p="fp32", scale="fp32", s="fp32"),
                    dict(STREAM=4, DROPOUT=dropout, NEED_GRAD_T=dropout, HAS_WEIGHT=weighted, LANE=LANE)))
    for terms in (2, 4, 8):
        out.append((f"ib_combine forward {terms} terms", ib_combine._ib_combine_forward_kernel,
                    dict(parts_ptrs=("*fp32",) * terms, sizes=("i32",) * terms, weights=("fp32",) * terms, ib_ptr=p,
                         term_ptrs=(p,) * terms), dict(TERMS=terms, BLOCK=1024)))
        out.append((f"ib_combine backward {terms} terms", ib_combine._ib_combine_backward_kernel,
                    dict(g_ib_ptr=p, g_term_ptrs=(p,) * terms, out_ptr="*fp32", weights=("fp32",) * terms),
                    dict(TERMS=terms, HAS_IB=True, HAS_TERM=0b101)))
    return out


def stream_variants():
    return [(f"rng stream normal={normal}", triton_helpers._stream_kernel,
             dict(seed_ptr="*i64", out_ptr="*fp32", numel="i32", start="i64"),
             dict(STREAM=1, NORMAL=normal, LANE=LANE, BLOCK=1024)) for normal in (True, False)]


def tcmax_variants(dt):
    """The TCMax kernels for logits of element dtype ``dt`` (accumulating in float32, float64 for fp64)."""
    p, acc = f"*{dt}", ("fp64" if dt == "fp64" else "fp32")
    work, out = f"*{acc}", []
    out.append((f"tcmax column partials {dt}", tcmax._column_lse_partial_kernel,
                dict(logits_ptr=p, labels_ptr="*i64", pmax_ptr=work, psum_ptr=work, ppick_ptr="*fp64",
                     pcount_ptr="*i32", B="i32", C="i32", stride_b="i32", stride_c="i32", rows_per_split="i32",
                     n_split="i32", n_cblocks="i32", modality="i32"),
                dict(BLOCK_B=64, BLOCK_C=64, WRITE_COUNT=True, ACC=tcmax._acc_dtype(_TORCH[dt]))))
    out.append((f"tcmax class-block merge {dt}", tcmax._class_block_merge_kernel,
                dict(pmax_ptr=work, psum_ptr=work, ppick_ptr="*fp64", pcount_ptr="*i32", mx_ptr=work, ls_ptr=work,
                     count_ptr=work, bmax_ptr="*fp64", bsum_ptr="*fp64", bcross_ptr="*fp64", bpick_ptr="*fp64",
                     bcount_ptr="*fp64", C="i32", n_split="i32", n_cblocks="i32"),
                dict(M=2, BLOCK_M=2, BLOCK_S=16, BLOCK_C=64)))
    out.append((f"tcmax losses {dt}", tcmax._tcmax_losses_kernel,
                dict(bmax_ptr="*fp64", bsum_ptr="*fp64", bcross_ptr="*fp64", bpick_ptr="*fp64", bcount_ptr="*fp64",
                     logz_ptr="*fp64", out_ptr=work, B="i32", n_cblocks="i32"),
                dict(M=3, BLOCK_M=4, BLOCK_N=16)))
    out.append((f"tcmax gradient {dt}", tcmax._tcmax_grad_kernel,
                dict(logits_ptr=p, labels_ptr="*i64", grad_ptr=p, mx_ptr=work, ls_ptr=work, count_ptr=work,
                     logz_ptr="*fp64", gout_ptr=work, B="i32", C="i32", stride_b="i32", stride_c="i32",
                     gstride_b="i32", gstride_c="i32", rows_per_split="i32", modality="i32"),
                dict(M=2, BLOCK_M=2, BLOCK_B=64, BLOCK_C=64, ACC=tcmax._acc_dtype(_TORCH[dt]))))
    return out


def encode_chain_variants():
    out = []
    for dt, precisions in (("fp32", PRECISIONS), ("bf16", ("ieee",))):
        p = f"*{dt}"
        for precision in precisions:
            for sample, splits in ((False, 1), (False, 4), (True, 4)):
                out.append((f"encode_chain {dt} {precision} sample={sample} splits={splits}",
                            encode_chain._encode_chain_kernel,
                            dict(x_ptr=p, w0_ptr=p, c0_ptr=p, w1_ptr=p, c1_ptr=p, w2_ptr=p, c2_ptr=p, w3_ptr=p,
                                 c3_ptr=p, eps0_ptr=p, eps1_ptr=p, out_ptr=p, part_ptr="*fp32", count_ptr="*i32",
                                 N="i32", X0="i32", H="i32", B0="i32", B1="i32", stride_x="i32", stride_eps0="i32",
                                 stride_eps1="i32", stride_out="i32"),
                            dict(BLOCK_M=16, BLOCK_K=64, BLOCK_H=64, TAIL_BLOCK_H=64, B0_P=128, B1_P=64,
                                 CHUNKS_PER_SPLIT=1, SPLITS=splits, SAMPLE=sample, PRECISION=precision, UPCAST=False)))
    return out


_TORCH = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}


def main() -> int:
    target = GPUTarget("cuda", 90, 32)
    failed = 0
    kernels = variants("fp32") + variants("bf16") + stream_variants() + encode_chain_variants()
    kernels += [v for dt in ("fp32", "bf16", "fp64") for v in tcmax_variants(dt)]
    for name, kernel, signature, constexprs in kernels:
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

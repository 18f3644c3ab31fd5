"""One op, one signature: every entry point of a fused op (the plain function, the autograd Function,
the torch implementation, the Triton launcher and its registered op) names the op's arguments in
the same order, so that a reader can go from one to the next without re-learning it."""

import inspect

import pytest

pytest.importorskip("triton")

from ithp_fast.kernels import (  # noqa: E402 (after the skip)
    detector_loss,
    detector_loss_triton,
    encode_chain,
    encode_chain_triton,
    ib_combine,
    ib_combine_triton,
    relu_dropout,
    relu_dropout_triton,
    reparam_kl,
    reparam_kl_triton,
    tcmax,
    tcmax_triton,
)

WEIGHTS = ("w0", "c0", "w1", "c1", "w2", "c2", "w3", "c3")

# op -> (its arguments in order, the entry points that take them)
SIGNATURES = {
    "reparam_kl forward": (
        ("h", "seed", "stream", "eps", "sample", "row_weight"),
        (reparam_kl.reparam_kl, reparam_kl.reparam_kl_partials, reparam_kl.ReparamKL.forward,
         reparam_kl.reparam_kl_torch, reparam_kl_triton.reparam_kl_forward, reparam_kl_triton.reparam_kl_forward_op),
    ),
    "reparam_kl backward": (
        ("grad_b", "grad_partials", "h", "seed", "stream", "eps", "sample", "row_weight", "need_grad_eps"),
        (reparam_kl.reparam_kl_backward_torch, reparam_kl_triton.reparam_kl_backward,
         reparam_kl_triton.reparam_kl_backward_op),
    ),
    "detector_loss forward": (
        ("z", "t", "seed", "stream", "p", "row_weight"),
        (detector_loss.detector_loss, detector_loss.detector_loss_partials, detector_loss.DetectorLoss.forward,
         detector_loss.detector_loss_torch, detector_loss_triton.detector_loss_forward,
         detector_loss_triton.detector_loss_forward_op),
    ),
    "detector_loss backward": (
        ("grad_partials", "z", "t", "seed", "stream", "p", "row_weight", "need_grad_t"),
        (detector_loss_triton.detector_loss_backward, detector_loss_triton.detector_loss_backward_op),
    ),
    "relu_dropout forward": (
        ("a", "seed", "stream", "p"),
        (relu_dropout.relu_dropout, relu_dropout.ReluDropout.forward, relu_dropout.relu_dropout_torch,
         relu_dropout_triton.relu_dropout_forward, relu_dropout_triton.relu_dropout_forward_op),
    ),
    "relu_dropout backward": (
        ("grad_d", "d", "p"),
        (relu_dropout.relu_dropout_backward_torch, relu_dropout_triton.relu_dropout_backward,
         relu_dropout_triton.relu_dropout_backward_op),
    ),
    "ib_combine": (
        ("kl_parts", "mse_parts", "detector_weights", "level_weights", "dtype"),
        (ib_combine.ib_combine, ib_combine.ib_combine_torch),
    ),
    "ib_combine launchers": (  # the weight of each term, read off (detector_weights, level_weights)
        ("grad_total", "grad_kl", "grad_mse", "kl_parts", "mse_parts", "kl_weights", "mse_weights", "dtype"),
        (ib_combine_triton.ib_combine_forward, ib_combine_triton.ib_combine_backward),
    ),
    "encode_chain": (
        ("x", *WEIGHTS, "eps0", "eps1", "precision", "config"),
        (encode_chain.encode_chain, encode_chain_triton.encode_chain_forward, encode_chain_triton.encode_chain_op),
    ),
    "tcmax": (
        ("grad_out", "logits", "labels", "block_b", "block_c", "splits"),
        (tcmax.tcmax_factorised, tcmax.tcmax_factorised_torch, tcmax_triton.tcmax_forward,
         tcmax_triton.tcmax_backward),
    ),
}


def parameters(fn) -> list[str]:
    if hasattr(fn, "_opoverload"):  # a registered op: its schema
        return [a.name for a in fn._opoverload._schema.arguments]
    return [name for name in inspect.signature(fn).parameters if name != "ctx"]


@pytest.mark.parametrize("op", list(SIGNATURES))
def test_entry_points_name_the_arguments_in_one_order(op):
    order, entry_points = SIGNATURES[op]
    for fn in entry_points:
        named = [name for name in parameters(fn) if name in order]
        name = getattr(fn, "__qualname__", None) or str(fn._opoverload)
        assert named == sorted(named, key=order.index), f"{name}: {named} is not in the order {order}"
        assert len(named) >= 2, f"{name}: names too few of the op's arguments ({named})"


def test_functions_taking_their_tensors_flat_document_the_order():
    """The Functions whose tensor count varies take ``*args``; their docstrings give the order."""
    assert "*kl_parts, *mse_parts, detector_weights, level_weights, dtype" in ib_combine.IBCombine.__doc__
    assert "L_1, ..., L_M, labels, launch" in tcmax.TCMaxFactorised.__doc__

"""Fused inference chain: text features ``x`` -> ``b1`` through both ITHP encoders in one launch.

Per row (H = inter_dim; W*, c* the weights and biases of encoder1.0, encoder1.3, encoder2.0, encoder2.3)::

    h0 = relu(W0 x + c0);   mu0 = W1[:B0] h0 + c1[:B0];   lv0 = W1[B0:] h0 + c1[B0:]
    b0 = mu0                            (posterior mean)
    b0 = mu0 + eps0 * exp(lv0 / 2)      (sampling: eps0 given)
    h1 = relu(W2 b0 + c2);   mu1 = W3[:B1] h1 + c3[:B1];   lv1 = W3[B1:] h1 + c3[B1:]
    b1 = mu1  or  mu1 + eps1 * exp(lv1 / 2)

The logvar halves are read only when sampling. Each Linear's output is rounded to the input
dtype (as PyTorch's Linear does) before the next layer; every dot accumulates in float32.

Inference only (no backward). The plain-PyTorch form of the same chain is
``ithp_fast.encode.chain`` (four ``addmm`` calls, the modules' dropout in between), which
``ithp_fast.encode`` takes for calls that need gradients, dropout or autocast, and on the CPU.
:func:`encode_chain` checks the operands and launches the kernel of ``encode_chain_triton.py``;
while torch.compile or torch.export traces, it calls ``torch.ops.ithp_fast.encode_chain`` instead,
the launcher registered as a Triton op (there), so the kernel stays in the graph as itself.
The launcher (``encode_chain_forward``) and the op take the arguments in :func:`encode_chain`'s
order, ``(x, w0, c0, w1, c1, w2, c2, w3, c3, eps0, eps1, precision)``.
"""

from __future__ import annotations

from typing import Optional

import torch

PRECISIONS = ("ieee", "tf32", "tf32x3")
"""Float32 matmul precision: ``"ieee"`` exact float32 (no tensor cores), ``"tf32"`` TensorFloat-32,
``"tf32x3"`` three TF32 products per float32 product (tensor cores, close to float32 accuracy)."""


def _check_operands(x: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> None:
    names = ("w0", "c0", "w1", "c1", "w2", "c2", "w3", "c3")
    if x.dim() != 2:
        raise ValueError(f"x: expected a 2-D tensor [rows, X0_dim], got shape {tuple(x.shape)}")
    for name, t in zip(names, weights):
        if t.dtype != x.dtype or t.device != x.device:
            raise TypeError(f"{name}: expected {x.dtype} on {x.device} like x, got {t.dtype} on {t.device}")
    w0, c0, w1, c1, w2, c2, w3, c3 = weights
    hidden, x0 = w0.shape
    if x.shape[1] != x0:
        raise ValueError(f"x: expected last dimension {x0} (w0's input width), got {x.shape[1]}")
    if w1.shape[1] != hidden or w1.shape[0] % 2 or w2.shape[0] != hidden or w2.shape[1] * 2 != w1.shape[0]:
        raise ValueError(f"w1 / w2: shapes {tuple(w1.shape)} / {tuple(w2.shape)} do not continue w0 {tuple(w0.shape)}")
    if w3.shape[1] != hidden or w3.shape[0] % 2:
        raise ValueError(f"w3: expected shape [2*B1_dim, {hidden}], got {tuple(w3.shape)}")
    for name, c, w in (("c0", c0, w0), ("c1", c1, w1), ("c2", c2, w2), ("c3", c3, w3)):
        if c.shape != (w.shape[0],):
            raise ValueError(f"{name}: expected shape ({w.shape[0]},), got {tuple(c.shape)}")


def encode_chain(
    x: torch.Tensor,
    w0: torch.Tensor, c0: torch.Tensor, w1: torch.Tensor, c1: torch.Tensor,
    w2: torch.Tensor, c2: torch.Tensor, w3: torch.Tensor, c3: torch.Tensor,
    *,
    eps0: Optional[torch.Tensor] = None,
    eps1: Optional[torch.Tensor] = None,
    precision: str = "ieee",
    config=None,
) -> torch.Tensor:
    """``b1`` ``[rows, B1]`` for ``x`` ``[rows, X0]`` in one kernel launch.

    ``w0, c0`` .. ``w3, c3`` are the four Linear layers (``encoder1.0``, ``encoder1.3``,
    ``encoder2.0``, ``encoder2.3``) as stored: ``w1`` / ``w3`` hold the mu rows first and the
    logvar rows after; only the mu rows are read unless ``eps0`` / ``eps1`` (``[rows, B0]`` /
    ``[rows, B1]``, sampling) are given. ``precision`` (float32 only): one of :data:`PRECISIONS`.
    ``config``: an ``encode_chain_triton.EncodeChainConfig`` (default: chosen per row count).
    No gradient flows through this op.
    """
    weights = (w0, c0, w1, c1, w2, c2, w3, c3)
    _check_operands(x, weights)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if (eps0 is None) != (eps1 is None):
        raise ValueError("eps0 / eps1: give both (sampling) or neither (posterior mean)")
    rows = x.shape[0]
    for name, eps, width in (("eps0", eps0, w1.shape[0] // 2), ("eps1", eps1, w3.shape[0] // 2)):
        if eps is not None and (eps.shape != (rows, width) or eps.device != x.device or eps.stride(-1) != 1):
            raise ValueError(
                f"{name}: expected shape ({rows}, {width}) on {x.device} with unit stride in the last "
                f"dimension, got {tuple(eps.shape)} on {eps.device}"
            )
    from .encode_chain_triton import encode_chain_forward  # Triton (and the op below) load at the first call

    if torch.compiler.is_compiling():  # the registered op: the kernel stays in the traced graph
        return torch.ops.ithp_fast.encode_chain(x, *weights, eps0, eps1, precision)
    return encode_chain_forward(x, *weights, eps0, eps1, precision, config)

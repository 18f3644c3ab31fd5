"""TCMax: the factorised O(B·C) loss against the direct O(B²·C) computation.

Groups (two modalities, float32 logits ``[B, C]``, random labels):

``tcmax fwd+bwd B=… C=…``   the three losses and the gradient of their sum w.r.t. both logits.
``tcmax forward B=… C=…``   the three losses, no grad.

Providers:

``reference``        the released code's computation: scores for all B·B pairings,
                     ``P = exp(S - mean S) / sum``, then the three log-probabilities. Skipped
                     where it would not fit or take too long (CPU: B²·C > 1.1e7; CUDA: > 2e9).
``ithp_fast``        :func:`ithp_fast.losses.tcmax_loss`, default backend: the fused Triton
                     kernel on CUDA, the pure-PyTorch factorised form on the CPU.
``ithp_fast.torch``  (CUDA only) the pure-PyTorch factorised form on the GPU.
``ithp_fast+graphs`` (CUDA only) ``ithp_fast`` captured whole (forward, and backward where timed)
                     in one CUDA graph: the GPU time of the kernels without Python's launch
                     overhead, i.e. the fused kernel's own bandwidth.

The label range check is off while timing (on CUDA it costs a device-to-host sync).
``nbytes`` is what the work must move at least: the logits (and labels) read once, plus, with
gradients, the two gradients written once; ``GBps`` against it is the fused kernel's achieved
bandwidth. ``extra_info["peak_bytes"]`` is the peak memory one call allocates above what existed
before it: ``torch.cuda.max_memory_allocated`` on CUDA, the CPU allocator's running total
(recorded by ``torch.profiler`` with ``profile_memory=True``) on the CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from scale import CUDA, DEVICE, pick

from ithp_fast.losses import tcmax_loss
from ithp_fast.serving.graphs import capture_graph

SIZES = pick(
    cuda=[(b, c) for b in (256, 1024, 4096) for c in (10, 100, 1000)],
    cpu=[(256, 10), (256, 100), (1024, 10), (1024, 100), (4096, 1000)],
    tiny=[(16, 4)],
)
DIRECT_LIMIT = 2e9 if CUDA else 1.1e7  # B·B·C entries the direct form may build here
PROVIDERS = ["reference", "ithp_fast"] + (["ithp_fast.torch", "ithp_fast+graphs"] if CUDA else [])


def released_direct(logits_a: torch.Tensor, logits_v: torch.Tensor, labels: torch.Tensor):
    """The O(B²·C) computation of the released code (the baseline, not the spec's definition)."""
    B = labels.shape[0]
    scores = logits_a[:, None, :] + logits_v[None, :, :]
    prob = torch.exp(scores - scores.mean())
    prob = prob / prob.sum()
    i = torch.arange(B, device=labels.device)
    joint = prob[i, i, labels]
    over_v = prob.sum(dim=1)[i, labels]
    over_a = prob.sum(dim=0)[i, labels]
    return tuple(-torch.log(p).mean() - math.log(B) for p in (joint, over_v, over_a))


def loss_fn(provider: str):
    if provider == "reference":
        return released_direct
    backend = "torch" if provider == "ithp_fast.torch" else None
    return lambda la, lv, y: tcmax_loss(la, lv, y, backend=backend, check_labels=False)


def graphed(fn):
    """``fn`` captured in one CUDA graph (after a warm-up); replays return its output."""
    graph, out = capture_graph(fn)

    def replay():
        graph.replay()
        return out

    return replay


def timed_fn(provider: str, fn):
    return graphed(fn) if provider.endswith("+graphs") else fn


def peak_bytes(fn) -> int:
    """Peak bytes allocated while ``fn()`` runs, above what was allocated before."""
    if CUDA:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, allocations = list(prof.profiler.kineto_results.experimental_event_tree()), []
    while events:
        event = events.pop()
        events.extend(event.children)
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size, event.extra_fields.total_allocated))
    if not allocations:
        return 0
    allocations.sort()
    before = allocations[0][2] - allocations[0][1]
    return max(total for _, _, total in allocations) - before


def cases():
    out = []
    for B, C in SIZES:
        for provider in PROVIDERS:
            if provider == "reference" and B * B * C > DIRECT_LIMIT:
                continue
            out.append(pytest.param(B, C, provider, id=f"B{B}-C{C}-{provider}"))
    return out


def inputs(B: int, C: int, grad: bool):
    g = torch.Generator().manual_seed(B * 7919 + C)
    la, lv = (torch.randn(B, C, generator=g).to(DEVICE).requires_grad_(grad) for _ in range(2))
    labels = torch.randint(0, C, (B,), generator=g).to(DEVICE)
    return la, lv, labels


@pytest.mark.parametrize("B, C, provider", cases())
def test_tcmax_forward_backward(measure, B, C, provider):
    la, lv, labels = inputs(B, C, grad=True)
    loss = loss_fn(provider)

    def step():
        return torch.autograd.grad(sum(loss(la, lv, labels)), (la, lv))

    peak = peak_bytes(step)  # of the eager call: a graph replay allocates nothing
    logits_bytes = 2 * la.numel() * la.element_size()
    measure(timed_fn(provider, step), group=f"tcmax fwd+bwd B={B} C={C}", provider=provider,
            nbytes=2 * logits_bytes + labels.numel() * labels.element_size(),
            extra={"dtype": la.dtype, "batch": B, "classes": C, "peak_bytes": peak})


@pytest.mark.parametrize("B, C, provider", cases())
def test_tcmax_forward(measure, B, C, provider):
    la, lv, labels = inputs(B, C, grad=False)
    loss = loss_fn(provider)

    def forward():
        return loss(la, lv, labels)

    peak = peak_bytes(forward)
    measure(timed_fn(provider, forward), group=f"tcmax forward B={B} C={C}", provider=provider,
            nbytes=2 * la.numel() * la.element_size() + labels.numel() * labels.element_size(),
            extra={"dtype": la.dtype, "batch": B, "classes": C, "peak_bytes": peak})

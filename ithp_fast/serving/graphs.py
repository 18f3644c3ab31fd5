"""CUDA-graph-captured ITHP: a graphed forward, a graphed training step, a graphed autograd callable.

At the paper's sizes (32 x 50 tokens) an ITHP step is launch-bound: the GPU finishes each kernel
long before the host has issued the next one. Capturing the whole step once and replaying it
removes the per-launch host cost. Each wrapper owns static input buffers (copies of the example
inputs); a call copies new inputs into them and replays. The forward's seed is drawn inside the
graph from torch's CUDA generator, so every replay draws fresh noise (``torch.manual_seed``
still reproduces a sequence of replays), and the backward inside the graph regenerates exactly
the noise of its forward.

Use them when the shapes are fixed (pad batches to one size) and the model runs on CUDA with the
``triton`` backend. A ``token_mask`` / ``detector_mask`` given at capture (see
:meth:`ithp_fast.ITHP.forward_levels`) is a static input like the others: every call may pass new
mask values (same shape), which the graph reads in place.

* :class:`GraphedTrainStep` -- forward + loss + backward (+ ``optimizer.step()`` if given) in one
  graph: the fastest training step; gradients land in ``p.grad`` (overwritten, not accumulated,
  by every replay).
* :class:`GraphedForward` -- the full forward (all six outputs) without autograd: eval / logging.
* :func:`graphed_autograd` -- forward and backward as two graphs behind an autograd function
  (``torch.cuda.make_graphed_callables``): when ITHP is one part of a larger eager model.

Outputs are the graph's static tensors, overwritten by the next replay: ``.clone()`` what you keep.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, TypeVar

import torch

from ..backends import resolve_backend

T = TypeVar("T")


def _check_cuda(model: torch.nn.Module, tensors: Sequence[torch.Tensor]) -> None:
    if not torch.cuda.is_available():
        raise RuntimeError("ithp_fast.serving: CUDA graphs need a CUDA device; none is available")
    for name, t in zip(("x", "visual", "acoustic"), tensors):
        if not isinstance(t, torch.Tensor) or t.device.type != "cuda":
            where = t.device if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: CUDA graphs need CUDA tensors, got {where}")
    param = next(model.parameters(), None)
    if param is not None and param.device.type != "cuda":
        raise ValueError(f"model: its parameters are on {param.device}; move it to CUDA before graphing")
    if hasattr(model, "backend") and resolve_backend(getattr(model, "backend"), tensors[0].device) != "triton":
        raise ValueError("model: graph capture needs the 'triton' backend (the others draw noise on the host)")


def _static(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().clone()


def _copy_in(static: Sequence[Optional[torch.Tensor]], new: Sequence[Optional[torch.Tensor]], names) -> None:
    for buf, t, name in zip(static, new, names):
        if t is None or t is buf:
            continue
        if buf is None:
            raise ValueError(f"{name}: this graph was captured without it")
        if t.shape != buf.shape:
            raise ValueError(f"{name}: the graph was captured for shape {tuple(buf.shape)}, got {tuple(t.shape)}")
        buf.copy_(t)


class _Captured:
    """Static inputs ``(x, visual, acoustic, eps0, eps1, token_mask, detector_mask)`` and a graph that reads them."""

    _names = ("x", "visual", "acoustic", "noise[0]", "noise[1]", "token_mask", "detector_mask")

    def __init__(self, model, x, visual, acoustic, noise, token_mask=None, detector_mask=None) -> None:
        _check_cuda(model, (x, visual, acoustic))
        if noise is not None and len(noise) != 2:
            raise TypeError("noise: expected a tuple (eps0, eps1)")
        eps = tuple(noise) if noise is not None else (None, None)
        self.model = model
        self.static = [_static(t) for t in (x, visual, acoustic, *eps, token_mask, detector_mask)]
        self.graph: Optional[torch.cuda.CUDAGraph] = None

    def inputs(self) -> tuple[tuple, dict]:
        """``(x, visual, acoustic)`` and the keyword arguments of the model call, all static buffers."""
        x, visual, acoustic, eps0, eps1, token_mask, detector_mask = self.static
        noise = None if eps0 is None else (eps0, eps1)
        return (x, visual, acoustic), dict(noise=noise, token_mask=token_mask, detector_mask=detector_mask)

    def replay(self, x, visual, acoustic, noise, token_mask=None, detector_mask=None) -> None:
        eps = tuple(noise) if noise is not None else (None, None)
        _copy_in(self.static, (x, visual, acoustic, *eps, token_mask, detector_mask), self._names)
        self.graph.replay()


def capture_graph(fn: Callable[[], T], *, warmup: int = 3, warmup_fn: Optional[Callable[[], object]] = None,
                  stream: Optional["torch.cuda.Stream"] = None, calls: int = 1) -> tuple["torch.cuda.CUDAGraph", T]:
    """``(graph, output)``: ``fn()`` captured ``calls`` times in one CUDA graph; ``output`` is what
    the last captured call returned (the graph's static output).

    First ``warmup_fn()`` (default ``fn``) runs ``warmup`` times on the capture stream (``stream``,
    default a new side stream): Triton compiles its kernels, and cuBLAS and the caching allocator
    size their workspaces, before the capture starts.
    """
    stream = stream if stream is not None else torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            (warmup_fn or fn)()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(calls):
            output = fn()
    torch.cuda.current_stream().wait_stream(stream)
    return graph, output


class GraphedForward:
    """``model(x, visual, acoustic)`` without autograd, captured once and replayed.

    Args:
        model: an ``ithp_fast.ITHP`` on CUDA (its train/eval mode at capture time is baked in).
        x: example text states, fixing the shapes and dtypes (as the next two).
        visual: example visual features.
        acoustic: example acoustic features.
        noise: optional example ``(eps0, eps1)``; if given, every call must pass noise too.
        token_mask: optional example token mask (a static input, as ``x``; each call may pass new values).
        detector_mask: optional example detector mask (the same).
        warmup: eager iterations before the capture.

    Call: ``graphed(x, visual, acoustic, noise=None, token_mask=None, detector_mask=None)`` (any
    argument left out keeps the static buffer's content) -> the six static outputs
    ``(b1, IB_total, kl0, mse0, kl1, mse1)``.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor, *,
                 noise: Optional[Sequence[torch.Tensor]] = None, token_mask: Optional[torch.Tensor] = None,
                 detector_mask: Optional[torch.Tensor] = None, warmup: int = 3) -> None:
        self._captured = _Captured(model, x, visual, acoustic, noise, token_mask, detector_mask)
        args, kwargs = self._captured.inputs()
        with torch.no_grad():
            self._captured.graph, self.outputs = capture_graph(lambda: model(*args, **kwargs), warmup=warmup)

    def __call__(self, x=None, visual=None, acoustic=None, *, noise=None, token_mask=None, detector_mask=None):
        self._captured.replay(x, visual, acoustic, noise, token_mask, detector_mask)
        return self.outputs


def ib_total(outputs) -> torch.Tensor:
    """The default training loss of :class:`GraphedTrainStep`: ``IB_total`` (output 1)."""
    return outputs[1]


class GraphedTrainStep:
    """Forward, loss, backward (and ``optimizer.step()``) of one training step in one CUDA graph.

    Args:
        model: an ``ithp_fast.ITHP`` on CUDA, in the mode to train in (``model.train()``).
        x: example text states, fixing the shapes and dtypes (as the next two).
        visual: example visual features.
        acoustic: example acoustic features.
        noise: optional example ``(eps0, eps1)`` (then every call passes noise).
        token_mask: optional example token mask (a static input, as ``x``; each call may pass new values).
        detector_mask: optional example detector mask (the same).
        loss_fn: ``outputs -> scalar`` (default: ``IB_total``).
        optimizer: stepped inside the graph if given; create it with ``capturable=True``
            (Adam / AdamW) so its state stays on the GPU.
        warmup: eager steps before the capture (they update the weights if an optimizer is given).

    Call: ``step(x, visual, acoustic, noise=None, token_mask=None, detector_mask=None)`` (arguments
    left out keep the static inputs)
    -> the static loss tensor; ``step.outputs`` holds the six static model outputs. After each
    call every parameter's ``.grad`` holds that step's gradient.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor, *,
                 noise: Optional[Sequence[torch.Tensor]] = None, token_mask: Optional[torch.Tensor] = None,
                 detector_mask: Optional[torch.Tensor] = None,
                 loss_fn: Callable[[tuple], torch.Tensor] = ib_total,
                 optimizer: Optional[torch.optim.Optimizer] = None, warmup: int = 3) -> None:
        self._captured = _Captured(model, x, visual, acoustic, noise, token_mask, detector_mask)
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        args, kwargs = self._captured.inputs()

        def step():
            outputs = model(*args, **kwargs)
            loss = loss_fn(outputs)
            loss.backward()
            if optimizer is not None:
                optimizer.step()
            return outputs, loss

        def eager_step():
            step()
            self._clear_grads()

        self._clear_grads()
        self._captured.graph, (self.outputs, self.loss) = capture_graph(step, warmup=warmup, warmup_fn=eager_step)

    def _clear_grads(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        self.model.zero_grad(set_to_none=True)

    def __call__(self, x=None, visual=None, acoustic=None, *, noise=None, token_mask=None,
                 detector_mask=None) -> torch.Tensor:
        self._captured.replay(x, visual, acoustic, noise, token_mask, detector_mask)
        return self.loss


class _Positional(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, visual, acoustic):
        return self.model(x, visual, acoustic)


def graphed_autograd(model: torch.nn.Module, x: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor,
                     *, warmup: int = 3) -> Callable:
    """``model`` as a graphed autograd callable (``torch.cuda.make_graphed_callables``).

    Returns ``f(x, visual, acoustic) -> (b1, IB_total, kl0, mse0, kl1, mse1)`` whose forward and
    backward each replay one graph; gradients flow into the parameters (accumulated as usual) and
    into inputs that required grad at capture. Use inside a larger eager model (ITHP-DeBERTa);
    the inputs' shapes, dtypes and ``requires_grad`` must match the examples.
    """
    _check_cuda(model, (x, visual, acoustic))
    wrapped = _Positional(model)
    graphed = torch.cuda.make_graphed_callables(wrapped, (x, visual, acoustic), num_warmup_iters=warmup)
    return graphed

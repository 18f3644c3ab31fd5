"""ITHP at the paper's sizes: inference ``b1``, the full forward, the training step.

Groups (each compares providers on the same inputs and weights):

``inference b1 B=…``  ``b1`` for ``[B, 50, 768]`` text, eval mode, no grad. ``reference`` is the
                      released model's eval forward (all six outputs, the only way it gives b1);
                      ``reference.encode`` the plain posterior-mean chain; ``ithp_fast`` the fast
                      ``encode``; ``reference.encode+torch.compile`` the compiled chain;
                      ``ithp_fast+graphs`` (CUDA) / ``ithp_fast+compile`` (CPU) the serving
                      wrapper ``ithp_fast.ServingEncoder`` with one bucket of the
                      benchmark's shape (CUDA graph of the fast path / ``torch.compile``);
                      ``ithp_fast.ServingEncoder`` (CPU) the serving wrapper's default (the
                      prepacked oneDNN chain); ``onnxruntime`` and ``aoti`` the posterior-mean
                      ``b1`` exported by ``ithp_fast.export`` (dynamic batch) and run in ONNX
                      Runtime / as an AOTInductor package (skipped when the package is missing;
                      ``aoti`` not in tiny mode);
                      ``first Linear alone`` the encoder's first ``addmm`` (768 -> 256, 70 % of
                      the chain's FLOPs) by itself: a floor no exact ``encode`` can beat.
``forward B=…``       the full eval forward, all six outputs, no grad.
``train step B=…``    forward + ``IB_total.backward()`` in train mode (dropout on); the eager
                      providers also record ``saved_bytes``, what autograd keeps for the backward
                      (parameters included).
``masked train step B=…``  the same step with a ``token_mask`` (ragged lengths, 25-50 of the 50
                      tokens real) and a ``detector_mask`` (each detector of each example missing
                      with probability 0.2): what masking costs, against the row above.

``reference+torch.compile`` is ``torch.compile`` of the reference module (``reduce-overhead``
for the no-grad forward on CUDA, the default mode for the training step); ``ithp_fast+graphs``
(CUDA) is ``ithp_fast.serving.GraphedForward`` / ``GraphedTrainStep``, called with the inputs
(copied into its static buffers, then one graph replay).
"""

from __future__ import annotations

import functools

import pytest
import torch
from scale import COMPILE, CUDA, DEVICE, TOKENS, compiled, pick
from workloads import DTYPES, check_noise, exported_file, ithp_config, ithp_inputs, ithp_pair, load_exported

from ithp_fast.serving import GraphedForward, GraphedTrainStep, ServingEncoder
from ithp_fast.tools.profile import saved_for_backward

INFERENCE_BATCHES = pick(cuda=[1, 8, 32, 128, 1024], cpu=[1, 32, 128], tiny=[2])
INFERENCE_BF16_BATCHES = pick(cuda=[1, 1024], cpu=[32], tiny=[])
FORWARD_BATCHES = pick(cuda=[8, 32, 128], cpu=[32], tiny=[2])
TRAIN_BATCHES = pick(cuda=[8, 32, 128], cpu=[8, 32, 128], tiny=[2])
# torch.compile costs compile time per shape: the compiled providers run at the sizes that matter.
COMPILED_INFERENCE = pick(cuda=[1, 1024], cpu=[32], tiny=[2])
# ServingEncoder(compile_mode="default") on the CPU (on CUDA its graphs are the fast provider).
FAST_COMPILED_INFERENCE = pick(cuda=[], cpu=[32], tiny=[])
COMPILED_FORWARD = pick(cuda=[32], cpu=[32], tiny=[2])
COMPILED_TRAIN = pick(cuda=[32], cpu=[32], tiny=[2])


def _cases(batches, providers, compiled_at, dtype="float32", fast_compiled_at=()):
    """``(batch, provider, dtype)`` params: compiled providers only at ``compiled_at`` (reference)
    and ``fast_compiled_at`` (ithp_fast), CUDA-graph providers only on CUDA."""
    cases = []
    for batch in batches:
        for provider in providers:
            if provider.endswith("torch.compile") and (not COMPILE or batch not in compiled_at):
                continue
            if provider == "ithp_fast+compile" and (not COMPILE or batch not in fast_compiled_at):
                continue
            if provider.endswith("+graphs") and not CUDA:
                continue
            if provider in CPU_FLOAT32_ONLY and (CUDA or dtype != "float32"):
                continue
            cases.append(pytest.param(batch, provider, dtype, id=f"B{batch}-{provider}-{dtype}"))
    return cases


INFERENCE_PROVIDERS = [
    "reference",
    "reference.encode",
    "reference.encode+torch.compile",
    "ithp_fast",
    "ithp_fast+graphs",
    "ithp_fast+compile",
    "ithp_fast.ServingEncoder",
    "onnxruntime",
    "aoti",
    "first Linear alone",
]
CPU_FLOAT32_ONLY = ("ithp_fast.ServingEncoder", "onnxruntime", "aoti")
"""Providers measured on the CPU in float32 only (the exported programs are float32 posterior means;
on CUDA ``ithp_fast+graphs`` is the serving wrapper)."""


@functools.lru_cache(maxsize=None)
def exported_encoder(fmt: str):
    """The posterior-mean ``b1`` of the benchmark's model, exported once (dynamic batch) and loaded."""
    _, fast = ithp_pair(ithp_config(), torch.float32)
    return load_exported(exported_file(fast.eval(), fmt, TOKENS), fmt)


def inference_fn(provider: str, batch: int, dtype: torch.dtype):
    cfg = ithp_config()
    reference, fast = ithp_pair(cfg, dtype)
    x, visual, acoustic = ithp_inputs(cfg, batch, dtype)
    if provider == "reference":
        run = lambda: reference(x, visual, acoustic)[0]  # noqa: E731
    elif provider == "reference.encode":
        run = lambda: reference.encode(x)  # noqa: E731
    elif provider == "reference.encode+torch.compile":
        encode = compiled(reference.encode, mode="reduce-overhead")
        run = lambda: encode(x)  # noqa: E731
    elif provider == "ithp_fast":
        run = lambda: fast.encode(x)  # noqa: E731
    elif provider == "first Linear alone":
        first, rows = fast.encoder1.first, x.reshape(-1, cfg.X0_dim)
        run = lambda: torch.addmm(first.bias, rows, first.weight.t())  # noqa: E731
    elif provider == "ithp_fast.ServingEncoder":
        serve = ServingEncoder(fast)
        run = lambda: serve(x)  # noqa: E731
    elif provider in ("onnxruntime", "aoti"):
        program = exported_encoder(provider)
        feeds = {"x": x.numpy()}
        run = (lambda: program(None, feeds)) if provider == "onnxruntime" else (lambda: program(x))  # noqa: E731
    elif provider in ("ithp_fast+graphs", "ithp_fast+compile"):
        mode = "default" if provider == "ithp_fast+compile" else None
        serve = ServingEncoder(fast, batch_sizes=[batch], tokens=TOKENS, compile_mode=mode)
        run = lambda: serve(x)  # noqa: E731
    else:
        raise ValueError(f"provider: unknown {provider!r}")
    return torch.no_grad()(run)


@pytest.mark.parametrize(
    "batch, provider, dtype",
    _cases(INFERENCE_BATCHES, INFERENCE_PROVIDERS, COMPILED_INFERENCE, fast_compiled_at=FAST_COMPILED_INFERENCE)
    + _cases(INFERENCE_BF16_BATCHES, INFERENCE_PROVIDERS, [], "bfloat16"),
)
def test_inference_b1(measure, batch, provider, dtype):
    fn = inference_fn(provider, batch, DTYPES[dtype])
    suffix = "" if dtype == "float32" else f" {dtype}"
    measure(fn, group=f"inference b1 B={batch}{suffix}", provider=provider, extra={"dtype": dtype, "batch": batch},
            compare=provider != "first Linear alone")  # a bound under the work, not the work


FORWARD_PROVIDERS = ["reference", "reference+torch.compile", "ithp_fast", "ithp_fast+graphs"]


def forward_fn(provider: str, batch: int, dtype: torch.dtype):
    cfg = ithp_config()
    reference, fast = ithp_pair(cfg, dtype)
    x, visual, acoustic = ithp_inputs(cfg, batch, dtype)
    if provider == "reference":
        model = reference
    elif provider == "reference+torch.compile":
        model = compiled(reference, mode="reduce-overhead")
    elif provider == "ithp_fast":
        model = fast
    elif provider == "ithp_fast+graphs":
        model = GraphedForward(fast, x, visual, acoustic)
    else:
        raise ValueError(f"provider: unknown {provider!r}")
    return torch.no_grad()(lambda: model(x, visual, acoustic))


@pytest.mark.parametrize("batch, provider, dtype", _cases(FORWARD_BATCHES, FORWARD_PROVIDERS, COMPILED_FORWARD))
def test_forward(measure, batch, provider, dtype):
    fn = forward_fn(provider, batch, DTYPES[dtype])
    measure(fn, group=f"forward B={batch}", provider=provider, extra={"dtype": dtype, "batch": batch})


TRAIN_PROVIDERS = ["reference", "reference+torch.compile", "ithp_fast", "ithp_fast+graphs"]


def train_masks(batch: int) -> dict:
    """``token_mask`` (ragged: 25-50 of the 50 tokens real) and ``detector_mask`` (a detector of an
    example missing with probability 0.2), seeded, on the bench device."""
    g = torch.Generator().manual_seed(batch)
    lengths = torch.randint(TOKENS // 2, TOKENS + 1, (batch,), generator=g)
    token_mask = torch.arange(TOKENS)[None, :] < lengths[:, None]
    detector_mask = torch.rand(batch, 2, generator=g) >= 0.2
    return dict(token_mask=token_mask.to(DEVICE), detector_mask=detector_mask.to(DEVICE))


def train_step_fn(provider: str, batch: int, dtype: torch.dtype, masked: bool = False):
    """``(step, saved_bytes)``: one training step (with :func:`train_masks` if ``masked``), and for
    the eager providers the bytes its forward keeps for the backward (None for the compiled and
    graphed ones)."""
    cfg = ithp_config()
    reference, fast = ithp_pair(cfg, dtype, train=True)
    x, visual, acoustic = ithp_inputs(cfg, batch, dtype)
    masks = train_masks(batch) if masked else {}
    noise = check_noise(cfg, batch, dtype)
    if provider == "ithp_fast+graphs":
        graphed_step = GraphedTrainStep(fast, x, visual, acoustic, noise=noise, **masks)
        # copies the inputs in and replays; the step's gradients are in the parameters
        return (lambda: (graphed_step(x, visual, acoustic, noise=noise), gradients(fast))), None
    if provider == "reference":
        model = reference
    elif provider == "reference+torch.compile":
        model = compiled(reference)
    elif provider == "ithp_fast":
        model = fast
    else:
        raise ValueError(f"provider: unknown {provider!r}")

    def step():
        loss = model(x, visual, acoustic, noise=noise, **masks)[1]
        loss.backward()
        return loss, gradients(model)

    eager = provider in ("reference", "ithp_fast")
    saved = saved_for_backward(lambda: model(x, visual, acoustic, noise=noise, **masks))[0] if eager else None
    return step, saved


def gradients(model: torch.nn.Module) -> list:
    """The parameters' gradients (what check mode compares after a first step)."""
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("batch, provider, dtype", _cases(TRAIN_BATCHES, TRAIN_PROVIDERS, COMPILED_TRAIN))
def test_train_step(measure, batch, provider, dtype):
    fn, saved_bytes = train_step_fn(provider, batch, DTYPES[dtype])
    extra = {"dtype": dtype, "batch": batch}
    if saved_bytes is not None:
        extra["saved_bytes"] = saved_bytes
    measure(fn, group=f"train step B={batch}", provider=provider, extra=extra)


MASKED_TRAIN_PROVIDERS = ["reference", "ithp_fast", "ithp_fast+graphs"]


@pytest.mark.parametrize("batch, provider, dtype", _cases(TRAIN_BATCHES, MASKED_TRAIN_PROVIDERS, []))
def test_masked_train_step(measure, batch, provider, dtype):
    fn, saved_bytes = train_step_fn(provider, batch, DTYPES[dtype], masked=True)
    extra = {"dtype": dtype, "batch": batch}
    if saved_bytes is not None:
        extra["saved_bytes"] = saved_bytes
    measure(fn, group=f"masked train step B={batch}", provider=provider, extra=extra)

"""Backend choice: argument > ITHP_FAST_BACKEND > device default, with clear errors."""

import pytest
import torch
from helpers import make_inputs, small_config

import ithp_fast
from ithp_fast import backends
from ithp_fast.backends import ENV_VAR, fused_ops, resolve_backend


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    return monkeypatch


def test_device_defaults(no_env):
    assert resolve_backend(None, "cpu") == "torch"
    assert resolve_backend(None, "cuda") == "triton"
    assert resolve_backend("auto", torch.device("cpu")) == "torch"


def test_precedence(no_env):
    no_env.setenv(ENV_VAR, "reference")
    assert resolve_backend(None, "cpu") == "reference"
    assert resolve_backend("torch", "cpu") == "torch"  # the argument wins
    no_env.setenv(ENV_VAR, "")
    assert resolve_backend(None, "cpu") == "torch"


CHOICES = r"expected one of \('auto', 'triton', 'torch', 'reference'\)"


def test_unknown_names(no_env):
    with pytest.raises(ValueError, match=f"^backend: {CHOICES}, got 'cudnn'$"):
        resolve_backend("cudnn", "cpu")
    no_env.setenv(ENV_VAR, "fast")
    with pytest.raises(ValueError, match=f"^environment variable {ENV_VAR}: {CHOICES}, got 'fast'$"):
        resolve_backend(None, "cpu")
    with pytest.raises(ValueError, match=f"^backend: {CHOICES}, got 'fast'$"):
        ithp_fast.ITHP(small_config(), backend="fast")
    with pytest.raises(ValueError, match=r"^backend \(of the fused ops\): expected one of \('triton', 'torch'\)"):
        fused_ops("reference")


def test_one_check_validates_every_choice_of_what_computes(no_env):
    """The backend of ITHP, TCMax and a fused op, and the runtime of the serving wrappers, are
    named from one vocabulary (ithp_fast.checks) and rejected by one check, with one message shape."""
    from ithp_fast import TCMaxLoss, checks
    from ithp_fast.kernels.relu_dropout import relu_dropout

    calls = []
    real = checks.check_choice

    def spy(value, choices, source):
        calls.append(source)
        return real(value, choices, source)

    cfg = small_config()
    attempts = {
        "backend": lambda: ithp_fast.ITHP(cfg, backend="cuda"),
        "backend ": lambda: TCMaxLoss(backend="cuda")(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2).long()),
        "backend  ": lambda: relu_dropout(torch.zeros(3), 0, 1, 0.5, backend="cuda"),
        "runtime": lambda: ithp_fast.ServingEncoder(ithp_fast.ITHP(cfg).eval(), runtime="cuda"),
    }
    for source, attempt in attempts.items():
        with pytest.raises(ValueError, match=rf"^{source.strip()}: expected one of \(.*\), got 'cuda'$"):
            attempt()
    for module in ("ithp_fast.backends", "ithp_fast.kernels", "ithp_fast.serving.buckets"):
        no_env.setattr(f"{module}.check_choice", spy)
    calls.clear()
    for attempt in attempts.values():
        with pytest.raises(ValueError):
            attempt()
    assert calls == ["backend", "backend", "backend", "runtime"]


def test_triton_on_cpu_needs_the_interpreter(no_env):
    no_env.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="backend 'triton' cannot run on cpu"):
        resolve_backend("triton", "cpu")
    model = ithp_fast.ITHP(small_config(), backend="triton")
    with pytest.raises(RuntimeError, match="use backend='torch'"):
        model(*make_inputs(small_config()))
    no_env.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", "cpu") == "triton"


@pytest.mark.parametrize("name", ["torch", "triton", "reference"])
def test_model_dispatches(no_env, name):
    """The chosen backend's ops (and only those) compute the forward."""
    if name == "triton" and not backends.triton_interpreter_on():
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1")
    calls = []
    real = backends.fused_ops

    def spy(which):
        calls.append(which)
        return real(which)

    no_env.setattr("ithp_fast.model.fused_ops", spy)
    no_env.setenv(ENV_VAR, name)
    cfg = small_config()
    ithp_fast.ITHP(cfg)(*make_inputs(cfg))
    assert calls == ([] if name == "reference" else [name])


def test_cpu_default_needs_no_interpreter(no_env):
    """On the CPU the default path never touches Triton: it works with the interpreter off."""
    no_env.setenv("TRITON_INTERPRET", "0")
    cfg = small_config()
    model = ithp_fast.ITHP(cfg).train()
    out = model(*make_inputs(cfg))
    out[1].backward()
    assert all(p.grad is not None for p in model.parameters())

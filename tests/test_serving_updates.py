"""The serving wrappers answer with the model's current weights after every update their docstrings
and docs/guarantees.md list as seen, and after ``refresh()`` for the others; a model holding NaN or Inf
weights is served, with non-finite answers exactly where the reference has them."""

import math

import pytest
import torch
from helpers import TOLERANCES
from test_inference import ithp, requests, tiny_deberta
from test_nonfinite import ENCODE_WEIGHTS, assert_same_pattern, encode_setup, reference_encode

import ithp_fast
from ithp_fast.encode import encode
from ithp_fast.serving.deberta import ServingDeberta, deberta_logits
from ithp_fast.serving.encoder import ServingEncoder

TOL = dict(rtol=1e-4, atol=1e-4)  # float32 through ONNX Runtime, as the export promises


def needs_onnxruntime():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")


def sgd_step(model):
    """One optimiser step (its in-place update bumps each parameter's version counter)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.encoder2.last.weight.sum().backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)


def other_weights(model, seed):
    torch.manual_seed(seed)
    return type(model)(model.config).eval().state_dict()


# Updates every path sees by itself: (name, update of the model in place)
SEEN = {
    "in-place op": lambda m: m.encoder1.first.weight.mul_(0.5),
    "detach() write": lambda m: m.encoder2.first.weight.detach().add_(0.25),
    "p.data = t": lambda m: setattr(m.encoder2.last.weight, "data", m.encoder2.last.weight.data * 1.5),
    "load_state_dict": lambda m: m.load_state_dict(other_weights(m, 3)),
    "optimiser step": sgd_step,
}
# Updates the CPU paths with a derived copy of the weights see after refresh()
NEEDS_REFRESH = {
    "p.data write": lambda m: m.encoder1.first.weight.data.mul_(0.5),
    "numpy write": lambda m: m.encoder2.first.bias.detach().numpy().__imul__(-1.0),
    "load_state_dict(assign=True)": lambda m: m.load_state_dict(other_weights(m, 4), assign=True),
}


def apply(update, model):
    with torch.no_grad() if update is not sgd_step else torch.enable_grad():
        update(model)


def check_current(server, model, x, tol):
    with torch.no_grad():
        torch.testing.assert_close(server(x), encode(model, x), **tol)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_encoder_answers_with_the_weights_after_every_listed_update(runtime):
    if runtime == "onnxruntime":
        needs_onnxruntime()
    model = ithp()
    server = ServingEncoder(model, runtime=runtime)
    assert server.path == {"torch": "onednn", "onnxruntime": "onnxruntime"}[runtime]
    tol = TOL if runtime == "onnxruntime" else TOLERANCES[torch.float32]
    x = torch.randn(6, model.config.X0_dim, generator=torch.Generator().manual_seed(0))
    for name, update in SEEN.items():
        apply(update, model)
        check_current(server, model, x, tol)
    for name, update in NEEDS_REFRESH.items():
        apply(update, model)
        unrefreshed = server(x)
        server.refresh()
        check_current(server, model, x, tol)
        if name == "p.data write":  # a weight the path holds a copy of: refresh() is what brings it in
            assert not torch.allclose(unrefreshed, server(x))


def test_encoder_buckets_on_the_cpu_read_the_parameters_at_every_call():
    model = ithp()
    server = ServingEncoder(model, batch_sizes=(1,), tokens=6, pad_to_buckets=True)
    x = torch.randn(6, model.config.X0_dim)
    for update in (*SEEN.values(), *list(NEEDS_REFRESH.values())[:2]):  # every write to the parameters' memory
        apply(update, model)
        check_current(server, model, x, TOLERANCES[torch.float32])


def test_deberta_on_onnxruntime_follows_updates_and_refreshes(tmp_path):
    needs_onnxruntime()
    model = tiny_deberta(eval_sampling="mean")
    (path, _) = ithp_fast.export(model, tmp_path / "model.onnx", format="onnx", tokens=5)
    server = ServingDeberta(model, tokens=5, runtime="onnxruntime", onnx_file=path)
    ids, mask = requests(3, 5, seed=1)
    with torch.no_grad():
        model.dberta.ITHP.encoder1.first.weight.mul_(3.0)  # the file stands for the weights it was given with
        torch.testing.assert_close(server(ids, mask), deberta_logits(model, ids, mask), **TOL)
        before = server(ids, mask)
        model.classifier.weight.data.mul_(-1.0)  # bypasses the version counter: refresh() is needed
        assert torch.equal(server(ids, mask), before)  # the exported program holds a copy
        server.refresh()
        torch.testing.assert_close(server(ids, mask), deberta_logits(model, ids, mask), **TOL)


# A model holding NaN or Inf weights: (weight of test_nonfinite.ENCODE_WEIGHTS or a blocked case, value)
POISONED = [("w0", math.nan), ("c0", math.inf), ("w1_mu", -math.inf), ("w1_logvar", math.nan),
            ("w2", math.inf), ("c3_mu", math.nan), ("x_blocked", None), ("b0_infinite", None),
            ("x", math.nan), ("x", -math.inf)]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_non_finite_weights_are_served_as_the_reference_computes_them(runtime):
    """No refusal ("differs from the model by nan"), no finite answer where the reference has NaN or
    Inf, no NaN or Inf where it is finite; the finite entries equal the reference's."""
    if runtime == "onnxruntime":
        needs_onnxruntime()
    model, x, _ = encode_setup("cpu", "x", 0.0)  # a clean model, on which the server is built
    server = ServingEncoder(model, runtime=runtime)
    tol = TOL if runtime == "onnxruntime" else TOLERANCES[torch.float32]
    finite_somewhere = non_finite_somewhere = 0
    for tensor, value in POISONED:
        poisoned, x, eps = encode_setup("cpu", tensor, value)
        with torch.no_grad():
            model.load_state_dict(poisoned.state_dict())
        want = reference_encode(model, x, eps, sample=False)
        got = server(x)
        assert_same_pattern(got, want, f"{runtime}, {tensor}={value}")
        finite = torch.isfinite(want)
        torch.testing.assert_close(got[finite], want[finite], **tol)
        finite_somewhere += bool(finite.any())
        non_finite_somewhere += bool((~finite).any())
    assert finite_somewhere and non_finite_somewhere  # the cases are what they say: both kinds of entries
    assert set(t for t, _ in POISONED) - {"x", "x_blocked", "b0_infinite"} <= set(ENCODE_WEIGHTS)

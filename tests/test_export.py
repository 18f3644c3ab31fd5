"""``ithp_fast.export``: ONNX files and AOTInductor packages that answer as the eager model does.

The whole ITHP-DeBERTa as an AOTInductor package is tested on a checkpoint trained by the CLI
(``test_export_command.py``): one DeBERTa compile in the suite is enough for CI's two cores."""

import os

import pytest
import torch
from test_inference import answers_from_threads, ithp, requests, tiny_deberta

import ithp_fast
from ithp_fast.encode import encode
from ithp_fast.serving.deberta import ServingDeberta, deberta_logits
from ithp_fast.serving.encoder import ServingEncoder

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = dict(rtol=1e-4, atol=1e-4)  # float32, as the export promises
TOKENS = 7


def onnx_run(path, **feeds):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {k: v.numpy() for k, v in feeds.items()})[0])


def aoti_run(path, *inputs):
    return torch._inductor.aoti_load_package(path)(*inputs)


def features(b, d, seed=0):
    return torch.randn(b, TOKENS, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_encoder_onnx_equals_eager(tmp_path, backend):
    model = ithp(backend=backend)  # the Triton backend exports its plain-PyTorch formula
    paths = ithp_fast.export(model, tmp_path / "b1.onnx", format="onnx", tokens=TOKENS)
    assert paths[0] == str(tmp_path / "b1.onnx") and all(os.path.isfile(p) for p in paths)
    for b in (1, 3):
        x = features(b, model.config.X0_dim, seed=b)
        with torch.no_grad():
            torch.testing.assert_close(onnx_run(paths[0], x=x), encode(model, x), **TOL)


def test_encoder_aoti_equals_eager(tmp_path):
    model = ithp()
    (path,) = ithp_fast.export(model, tmp_path / "b1.pt2", format="aoti", tokens=TOKENS)
    runner = torch._inductor.aoti_load_package(path)
    for b in (1, 3):
        x = features(b, model.config.X0_dim, seed=b)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), encode(model, x), **TOL)


@pytest.mark.parametrize("eval_sampling", ["mean", "sample"])  # exported: the posterior mean either way
def test_deberta_onnx_equals_eager(tmp_path, eval_sampling):
    model = tiny_deberta(eval_sampling=eval_sampling)
    (path, data) = ithp_fast.export(model, tmp_path / "model.onnx", format="onnx", tokens=TOKENS)
    assert data == str(tmp_path / "model.onnx.data")
    mean_model = tiny_deberta(eval_sampling="mean")
    for b in (1, 3):
        ids, mask = requests(b, TOKENS, seed=b, pad_from=4)
        with torch.no_grad():
            want = deberta_logits(mean_model, ids, mask)
        torch.testing.assert_close(onnx_run(path, input_ids=ids, attention_mask=mask), want, **TOL)


def test_fixed_batch(tmp_path):
    model = ithp()
    (path, _) = ithp_fast.export(model, tmp_path / "b1.onnx", format="onnx", tokens=TOKENS, batch=2)
    x = features(2, model.config.X0_dim)
    with torch.no_grad():
        torch.testing.assert_close(onnx_run(path, x=x), encode(model, x), **TOL)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        onnx_run(path, x=features(3, model.config.X0_dim))


def test_the_model_keeps_its_mode(tmp_path):
    model = ithp().train()
    ithp_fast.export(model, tmp_path / "b1.onnx", format="onnx", tokens=TOKENS)
    assert model.training


def test_export_traces_with_is_compiling_true():
    """What ``ithp_fast.ITHP.forward`` relies on to trace the reference formula under export."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.compiler.is_compiling())
            return x + 1

    torch.export.export(Probe(), (torch.ones(2),))
    assert seen and all(seen)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(format="tflite"), ValueError, r"format: expected one of \('onnx', 'aoti'\), got 'tflite'"),
    (dict(format="aoti"), ValueError, r"output: an AOTInductor package's name must end in \.pt2"),
    (dict(format="onnx", tokens=0), ValueError, "tokens: expected a positive int, got 0"),
    (dict(format="onnx", batch=-1), ValueError, "batch: expected a positive int, got -1"),
])
def test_bad_arguments_are_named_and_nothing_is_written(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        ithp_fast.export(ithp(), tmp_path / "b1.onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_missing_output_directory_and_wrong_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="output: the directory .*missing does not exist"):
        ithp_fast.export(ithp(), tmp_path / "missing" / "b1.onnx", format="onnx")
    with pytest.raises(TypeError, match="model: expected an ithp_fast.ITHPDeberta or an ITHP, got Linear"):
        ithp_fast.export(torch.nn.Linear(2, 2), tmp_path / "b1.onnx", format="onnx")
    assert os.listdir(tmp_path) == []


def test_a_failed_check_leaves_nothing(tmp_path, monkeypatch):
    from ithp_fast.serving import export as export_module

    monkeypatch.setattr(export_module, "CHECK_TOLERANCE", {torch.float32: -1.0})
    with pytest.raises(RuntimeError, match="differs from the model .* nothing was written"):
        ithp_fast.export(ithp(), tmp_path / "b1.onnx", format="onnx", tokens=TOKENS)
    assert os.listdir(tmp_path) == []


# --- The serving wrappers on ONNX Runtime -------------------------------------------------------


def test_served_encoder_on_onnxruntime_on_the_cpu():
    model = ithp()
    server = ServingEncoder(model, runtime="onnxruntime")
    assert server.path == "onnxruntime" and server.bucket_rows == ()
    g = torch.Generator().manual_seed(0)
    reqs = [(torch.randn(*lead, model.config.X0_dim, generator=g),) for lead in [(), (1,), (2, 3), (3, 2, 2), (50,)]]
    with torch.no_grad():
        for (x,) in reqs:
            torch.testing.assert_close(server(x), encode(model, x), **TOL)
        model.encoder1[0].weight.mul_(0.5)  # an in-place update: the next call exports again
        torch.testing.assert_close(server(reqs[2][0]), encode(model, reqs[2][0]), **TOL)
    serial = [server(*r) for r in reqs]
    got, _ = answers_from_threads(server, reqs, rounds=4)
    assert all(torch.equal(a, serial[i % len(reqs)]) for i, a in enumerate(got))



def test_served_deberta_on_onnxruntime_pads_tokens_and_takes_any_batch(tmp_path):
    model = tiny_deberta(eval_sampling="mean")
    server = ServingDeberta(model, tokens=(5, TOKENS))  # the CPU default: ONNX Runtime
    assert server.runtime == server.backend == "onnxruntime"  # backend: the old name
    for b, t, pad_from in [(1, TOKENS, None), (3, 4, 2), (2, 6, None), (9, TOKENS, 3)]:
        ids, mask = requests(b, t, seed=b, pad_from=pad_from)
        with torch.no_grad():
            torch.testing.assert_close(server(ids, mask), deberta_logits(model, ids, mask), **TOL)
    ids, _ = requests(2, 12)  # beyond the token counts: eager
    with torch.no_grad():
        torch.testing.assert_close(server(ids), deberta_logits(model, ids), **TOL)
    (path, _) = ithp_fast.export(model, tmp_path / "model.onnx", format="onnx", tokens=TOKENS)
    from_file = ServingDeberta(model, tokens=TOKENS, runtime="onnxruntime", onnx_file=path)
    reqs = [requests(b, TOKENS, seed=b) for b in (1, 2, 3, 4) * 3]
    serial = [from_file(*r) for r in reqs]
    got, _ = answers_from_threads(from_file, reqs, rounds=1)
    assert all(torch.equal(a, b) for a, b in zip(got, serial))


def test_served_deberta_runtime_arguments_are_checked():
    with pytest.raises(ValueError, match=r"runtime: expected one of \('auto', 'torch', 'onnxruntime'\), got 'ort'"):
        ServingDeberta(tiny_deberta(eval_sampling="mean"), runtime="ort")
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', 'torch', 'onnxruntime'\), got 'ort'"):
        ServingDeberta(tiny_deberta(eval_sampling="mean"), backend="ort")  # the old name of runtime=
    assert ServingDeberta(tiny_deberta(eval_sampling="mean"), backend="torch").runtime == "torch"
    with pytest.raises(ValueError, match="runtime: 'onnxruntime' serves the posterior mean, but this model samples"):
        ServingDeberta(tiny_deberta(eval_sampling="sample"), runtime="onnxruntime")
    with pytest.raises(ValueError, match="onnx_file: only used with runtime='onnxruntime'"):
        ServingDeberta(tiny_deberta(eval_sampling="mean"), runtime="torch", onnx_file="model.onnx")


def test_encoder_of_three_levels_on_onnxruntime():
    from helpers import level_config

    model = ithp(cfg=level_config(3))
    server = ServingEncoder(model, runtime="onnxruntime")
    assert server.path == "onnxruntime"
    x = features(3, model.config.X0_dim)
    with torch.no_grad():
        torch.testing.assert_close(server(x), encode(model, x), **TOL)

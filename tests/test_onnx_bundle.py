"""The ONNX bundle of an ``ITHPDeberta``: the tokenizer beside the file, metadata in it, dynamic axes named
``batch`` and ``sequence``, any batch and length up to ``max_seq_length`` scoring as the model does, int32 ids
refused with the dtype named (and converted by ithp_fast's own ONNX Runtime path)."""

import os

import numpy as np
import pytest
import torch
from helpers import TEXTS, onnx_scores, tiny_text_model

import ithp_fast

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module", params=[True, False], ids=["mask", "no-mask"])
def bundle(request, tmp_path_factory):
    model = tiny_text_model(pass_attention_mask=request.param)
    folder = tmp_path_factory.mktemp("bundle")
    written = ithp_fast.export(model, folder / "model.onnx", format="onnx")
    return model, folder, written


def test_the_bundle_holds_the_tokenizer_and_says_what_it_computes(bundle):
    model, folder, written = bundle
    assert sorted(os.path.basename(p) for p in written) == ["model.onnx", "model.onnx.data", "tokenizer.json",
                                                             "tokenizer_config.json"]
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["tokens"] == "8" and meta["eval_sampling"] == "mean" and meta["tokenizer"] == "word-level"
    assert meta["output_range"] == "-3,3" and "sentiment score" in meta["output"]
    assert meta["ithp_fast_version"] == ithp_fast.__version__ and meta["tokenizer_file"] == "tokenizer.json"
    axes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in list(proto.graph.input) + list(proto.graph.output)}
    assert axes == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"],
                    "logits": ["batch", 1]}


def test_any_batch_and_length_scores_as_the_model(bundle):
    import tokenizers

    model, folder, _ = bundle
    for texts in (TEXTS[:1], TEXTS, TEXTS[2:] * 3, ["dull"]):
        np.testing.assert_allclose(onnx_scores(folder, texts), model.predict(texts), rtol=1e-5, atol=1e-5)
    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    long = tokenizer.encode("the plot was dull this movie was not great i love")
    assert len(long.ids) == 8 and long.ids[-1] == 2  # cut to max_seq_length, [SEP] last


def test_int32_ids_are_refused_with_the_dtype_named_and_converted_by_ithp_fast(bundle):
    from ithp_fast.serving.ort_backend import OnnxRuntimeProgram

    model, folder, _ = bundle
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    ids = np.array([[1, 5, 6, 2]], dtype=np.int32)
    with pytest.raises(Exception, match=r"expected: \(tensor\(int64\)\)"):
        session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    program = OnnxRuntimeProgram(model, 8, onnx_file=str(folder / "model.onnx"))
    got = program(torch.from_numpy(ids), torch.ones(1, 4, dtype=torch.int32))
    with torch.no_grad():
        want = model(torch.from_numpy(ids).long(), attention_mask=torch.ones(1, 4, dtype=torch.long)).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

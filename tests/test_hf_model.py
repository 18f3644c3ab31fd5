"""ITHP-DeBERTa as a Hugging Face model: ``ITHPDebertaConfig`` / ``ITHPDeberta`` with the authors' keys,
``save_pretrained`` / ``from_pretrained``, the Auto classes and ``pipeline``, the text-only forward, the
initialisation transformers gives the layers around the backbone, and file modes."""

import json
import os
import stat

import pytest
import torch
from helpers import TEXT_WORDS, tiny_text_model
from helpers import TEXTS as SAMPLE_TEXTS
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DebertaV2Config,
    DebertaV2Model,
    pipeline,
)

import ithp_fast
from ithp_fast import ITHPConfig, ITHPDeberta, ITHPDebertaConfig

TEXTS = SAMPLE_TEXTS[:3]


def ids_and_mask(model, texts=TEXTS):
    batch = model.tokenizer(texts, padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def test_config_is_a_regression_with_the_backbone_nested(tmp_path):
    config = tiny_text_model().config
    assert config.model_type == "ithp_deberta" and config.problem_type == "regression"
    assert config.num_labels == 1 and config.id2label == {0: "sentiment"}
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "ithp_deberta" and saved["backbone"]["model_type"] == "deberta-v2"
    assert saved["ithp"]["B1_dim"] == 4 and saved["max_seq_length"] == 8
    again = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(again, ITHPDebertaConfig) and again.backbone.hidden_size == 16
    assert again.ithp_config == config.ithp_config
    with pytest.raises(ValueError, match="ithp: X0_dim=768 must equal the backbone's hidden_size=16"):
        ITHPDebertaConfig(backbone=config.backbone, ithp=ITHPConfig())
    with pytest.raises(ValueError, match="eval_sampling: expected one of sample, mean, got 'median'"):
        ITHPDebertaConfig(eval_sampling="median")


def test_save_and_load_through_every_route_gives_the_same_scores(tmp_path):
    model = tiny_text_model()
    ids, mask = ids_and_mask(model)
    with torch.no_grad():
        want = model(ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    loaded = [ITHPDeberta.from_pretrained(tmp_path), AutoModelForSequenceClassification.from_pretrained(tmp_path),
              AutoModel.from_pretrained(tmp_path)]
    for other in loaded:
        assert type(other) is ITHPDeberta and not other.training and other.device == torch.device("cpu")
        assert other.config.to_diff_dict() == model.config.to_diff_dict()
        with torch.no_grad():
            torch.testing.assert_close(other(ids, attention_mask=mask).logits, want)
    assert loaded[0].tokenizer is not None  # from_pretrained attaches the tokenizer saved beside the weights
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer(TEXTS[0])["input_ids"] == model.tokenizer(TEXTS[0])["input_ids"]
    scores = pipeline("text-classification", model=str(tmp_path))(TEXTS)
    assert [s["label"] for s in scores] == ["sentiment"] * 3
    torch.testing.assert_close(torch.tensor([s["score"] for s in scores]), want[:, 0], rtol=1e-5, atol=1e-5)


def test_weight_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        tiny_text_model().save_pretrained(tmp_path / "default")
        os.umask(0o077)
        tiny_text_model().save_pretrained(tmp_path / "private")
    finally:
        os.umask(previous)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "default" / name).st_mode) == 0o644, name
        assert stat.S_IMODE(os.stat(tmp_path / "private" / name).st_mode) == 0o600, name


def test_text_only_forward_in_eval_gives_the_logits_of_the_full_forward():
    model = tiny_text_model()
    ids, mask = ids_and_mask(model)
    detectors = torch.rand(*ids.shape, 5), torch.rand(*ids.shape, 7)
    with torch.no_grad():
        full = model(ids, *detectors, mask)
        text = model(ids, attention_mask=mask)
    assert text.IB_total is None and text.kl0 is None and len(text.to_tuple()) == 1
    torch.testing.assert_close(text.logits, full.logits)
    logits, ib, kl0, mse0, kl1, mse1 = full  # still unpacks like the authors' 6-tuple
    assert full["logits"] is logits and ib.dim() == 0
    model.train()
    with pytest.raises(ValueError, match=r"detectors: expected one tensor for each of \['acoustic', 'visual'\]"):
        model(ids, attention_mask=mask)


def test_the_layers_around_the_backbone_start_as_transformers_initialises_them(tmp_path):
    backbone = DebertaV2Model(DebertaV2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=32, vocab_size=30))
    backbone.save_pretrained(tmp_path)
    kept = {k: v.clone() for k, v in backbone.state_dict().items()}
    torch.manual_seed(0)
    model = ITHPDeberta(str(tmp_path), ITHPConfig(X0_dim=64, inter_dim=256))
    for name, value in model.dberta.model.state_dict().items():  # a pretrained backbone keeps its weights
        torch.testing.assert_close(value, kept[name], rtol=0, atol=0, msg=name)
    around = [m for name, m in model.named_modules() if not name.startswith("dberta.model")]
    linears = [m for m in around if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 11  # ITHP's 8, expand, pooler, classifier
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    norm = model.dberta.LayerNorm
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_the_authors_keys_are_the_state_dict_and_settings_live_in_the_config():
    model = tiny_text_model()
    assert "dberta.expand.0.weight" in model.state_dict() and "classifier.weight" in model.state_dict()
    model.pass_attention_mask = False  # attributes the computation reads are the config's
    assert model.config.pass_attention_mask is False
    assert len(TEXT_WORDS) + 4 == model.config.backbone.vocab_size


def test_the_reference_and_the_hugging_face_model_compute_the_same():
    model = tiny_text_model(fast=False)
    plain = ithp_fast.reference.ITHPDeberta(DebertaV2Model(model.config.backbone),
                                            ITHPConfig.from_dict(model.config.ithp), eval_sampling="mean").eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    ids, mask = ids_and_mask(model)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)

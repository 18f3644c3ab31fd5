"""ITHP-DeBERTa on a tiny random DeBERTa-v2 config: no download, no network."""

import pytest
import torch
from transformers import DebertaV2Config

import ithp_fast
from helpers import make_noise
from ithp_fast import ITHPConfig, ITHPDeberta

HIDDEN = 32


def tiny_backbone_config():
    return DebertaV2Config(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        vocab_size=100, max_position_embeddings=64, hidden_dropout_prob=0.1,
    )


def tiny_ithp():
    return ITHPConfig(X0_dim=HIDDEN, X1_dim=7, X2_dim=5, inter_dim=16, B0_dim=8, B1_dim=6)


def batch(b=3, t=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (b, t), generator=g)
    visual, acoustic = torch.rand(b, t, 5, generator=g), torch.rand(b, t, 7, generator=g)
    return ids, visual, acoustic


@pytest.mark.parametrize("ithp_cls", [ithp_fast.reference.ITHP, ithp_fast.ITHP])
def test_forward_backward_and_the_spec_loss(ithp_cls):
    torch.manual_seed(0)
    model = ITHPDeberta(tiny_backbone_config(), tiny_ithp(), ithp_cls=ithp_cls)
    assert isinstance(model.ithp, ithp_cls)
    ids, v, a = batch()
    out = model(ids, v, a, torch.ones_like(ids))
    logits, ib, kl0, mse0, kl1, mse1 = out  # unpacks like the authors' 6-tuple
    assert logits.shape == (3, 1) and ib.dim() == 0
    labels = torch.tensor([0.5, -1.0, 2.0])
    loss = model.training_loss(out, labels)
    want = ((logits.squeeze(1) - labels) ** 2).mean() + 2 / (8 + 32) * ib
    torch.testing.assert_close(loss, want)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad and "rel_embeddings" not in name:
            assert p.grad is not None, name


def test_state_dict_names_follow_the_authors_model():
    keys = list(ITHPDeberta(tiny_backbone_config(), tiny_ithp()).state_dict())
    for k in ["dberta.ITHP.encoder1.0.weight", "dberta.expand.weight", "dberta.LayerNorm.weight",
              "dberta.pooler.dense.weight", "classifier.weight", "dberta.model.embeddings.word_embeddings.weight"]:
        assert k in keys, k


def test_fusion_and_head_are_the_spec():
    torch.manual_seed(0)
    model = ITHPDeberta(tiny_backbone_config(), tiny_ithp(), beta_shift=0.7).eval()
    ids, v, a = batch()
    mask = torch.ones_like(ids)
    noise = make_noise(tiny_ithp(), lead=ids.shape)
    logits = model(ids, v, a, mask, noise=noise).logits
    body = model.dberta
    x = body.model(ids, attention_mask=mask).last_hidden_state
    b1 = body.ITHP(x, v, a, noise=noise)[0]
    h = torch.nn.functional.layer_norm(x + 0.7 * body.expand(b1), (HIDDEN,), body.LayerNorm.weight, body.LayerNorm.bias)
    pooled = torch.tanh(h[:, 0] @ body.pooler.dense.weight.T + body.pooler.dense.bias)
    torch.testing.assert_close(logits, model.classifier(pooled))


def test_attention_mask_matters_with_padding_and_flag_reproduces_authors():
    torch.manual_seed(0)
    model = ITHPDeberta(tiny_backbone_config(), tiny_ithp()).eval()
    ids, v, a = batch()
    mask = torch.ones_like(ids)
    mask[:, 6:] = 0  # the last three tokens are padding
    noise = make_noise(tiny_ithp(), lead=ids.shape)
    with_mask = model(ids, v, a, mask, noise=noise).logits
    without = model(ids, v, a, None, noise=noise).logits
    assert not torch.allclose(with_mask, without)
    model.pass_attention_mask = False  # the authors' script passes no mask
    torch.testing.assert_close(model(ids, v, a, mask, noise=noise).logits, without)


def test_x0_dim_must_match_hidden_size():
    with pytest.raises(ValueError, match=f"X0_dim=768 must equal the backbone's hidden_size={HIDDEN}"):
        ITHPDeberta(tiny_backbone_config(), ITHPConfig())


def test_default_ithp_config_takes_the_hidden_size():
    assert ITHPDeberta(tiny_backbone_config()).ithp.config.X0_dim == HIDDEN


def test_local_pretrained_directory_round_trip(tmp_path):
    torch.manual_seed(0)
    src = ITHPDeberta(tiny_backbone_config(), tiny_ithp())
    src.dberta.model.save_pretrained(tmp_path)
    loaded = ITHPDeberta(str(tmp_path), tiny_ithp())
    for (k, p), (_, q) in zip(src.dberta.model.state_dict().items(), loaded.dberta.model.state_dict().items()):
        torch.testing.assert_close(p, q, msg=k)


def test_missing_directory_is_a_clear_error_not_a_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a local directory.*Nothing is downloaded"):
        ITHPDeberta("microsoft/deberta-v3-base", tiny_ithp())


def test_bad_input_ids_and_mask():
    model = ITHPDeberta(tiny_backbone_config(), tiny_ithp())
    ids, v, a = batch()
    with pytest.raises(ValueError, match=r"input_ids: expected an integer tensor \[batch, tokens\]"):
        model(ids.float(), v, a)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(3, 9\)"):
        model(ids, v, a, torch.ones(3, 8, dtype=torch.long))

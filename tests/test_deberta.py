"""ITHP-DeBERTa on a tiny random DeBERTa-v2 config: no download, no network."""

import pytest
import torch
from helpers import make_noise
from transformers import DebertaV2Config

import ithp_fast
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
    for k in ["dberta.ITHP.encoder1.0.weight", "dberta.expand.0.weight", "dberta.LayerNorm.weight",
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


def fixed_model(ithp_cls=ithp_fast.reference.ITHP, cfg=None, **kwargs):
    torch.manual_seed(0)
    return ITHPDeberta(tiny_backbone_config(), cfg or tiny_ithp(), ithp_cls=ithp_cls, **kwargs).eval()


@pytest.mark.parametrize("ithp_cls", [ithp_fast.reference.ITHP, ithp_fast.ITHP])
def test_mask_ithp_padding_passes_the_attention_mask_as_token_mask(ithp_cls):
    """Off (default): the released behaviour, padding inside ITHP's means; on: ITHP's losses are
    those of forward_levels with the attention mask as token_mask."""
    ids, v, a = batch()
    attention = torch.ones_like(ids)
    attention[0, 5:] = 0
    attention[2, 2:] = 0
    cfg = tiny_ithp()
    noise = make_noise(cfg, (3, 9))
    released, masked = fixed_model(ithp_cls), fixed_model(ithp_cls, mask_ithp_padding=True)
    with torch.no_grad():
        plain = released(ids, v, a, attention, noise=noise)
        got = masked(ids, v, a, attention, noise=noise)
        x = masked.dberta.model(ids, attention_mask=attention).last_hidden_state
        want = masked.ithp.forward_levels(x, (a, v), noise=noise, token_mask=attention.bool())
        unmasked = masked.ithp(x, v, a, noise=noise)
    torch.testing.assert_close(got.IB_total, want[1])
    torch.testing.assert_close(got.kl_terms, want[2])
    torch.testing.assert_close(plain.IB_total, unmasked[1])
    assert not torch.allclose(got.IB_total, plain.IB_total)
    torch.testing.assert_close(got.logits, plain.logits)  # the head reads token 0 either way


def test_modality_order_names_each_levels_detector():
    """modality_order=("visual", "acoustic"): level 1 predicts visual; forward(ids, visual, acoustic)
    and detectors= by name or in level order all say the same."""
    cfg = ITHPConfig(X0_dim=HIDDEN, detector_dims=(5, 7), bottleneck_dims=(8, 6), detector_weights=(8.0, 32.0),
                     inter_dim=16)
    model = fixed_model(cfg=cfg, modality_order=("visual", "acoustic"))
    ids, v, a = batch()
    noise = make_noise(tiny_ithp(), (3, 9))
    with torch.no_grad():
        by_args = model(ids, v, a, noise=noise)
        by_name = model(ids, detectors={"acoustic": a, "visual": v}, noise=noise)
        in_order = model(ids, detectors=[v, a], noise=noise)
        x = model.dberta.model(ids).last_hidden_state
        want = model.ithp.forward_levels(x, (v, a), noise=noise)
    for out in (by_name, in_order):
        for u, w in zip(out, by_args):
            assert torch.equal(u, w)
    torch.testing.assert_close(by_args.IB_total, want[1])
    torch.testing.assert_close((by_args.mse0, by_args.mse1), want[3])


@pytest.mark.parametrize("ithp_cls", [ithp_fast.reference.ITHP, ithp_fast.ITHP])
def test_three_detectors_and_a_detector_mask(ithp_cls):
    cfg = ITHPConfig(X0_dim=HIDDEN, detector_dims=(7, 5, 4), bottleneck_dims=(8, 6, 3),
                     detector_weights=(8.0, 32.0, 2.0), inter_dim=16)
    model = fixed_model(ithp_cls, cfg, modality_order=("acoustic", "visual", "pose"), mask_ithp_padding=True)
    ids, v, a = batch()
    pose = torch.rand(3, 9, 4)
    present = torch.tensor([[True, False, True], [True, True, False], [False, False, False]])
    out = model(ids, detectors={"acoustic": a, "visual": v, "pose": pose}, detector_mask=present,
                attention_mask=torch.ones_like(ids))
    assert isinstance(out, ithp_fast.ITHPDebertaLevelsOutput) and len(out.kl_terms) == len(out.mse_terms) == 3
    assert model.dberta.expand[0].in_features == 3  # the last level's width
    loss = model.training_loss(out, torch.zeros(3))
    torch.testing.assert_close(loss, ((out.logits.squeeze(1)) ** 2).mean() + 2 / 42 * out.IB_total)
    loss.backward()


def test_detector_arguments_are_checked():
    model = fixed_model()
    ids, v, a = batch()
    with pytest.raises(ValueError, match=r"detectors: expected one tensor for each of \['acoustic', 'visual'\] "
                                         r"\(modality_order\), got \['visual'\]"):
        model(ids, v)
    with pytest.raises(ValueError, match="detectors: given together with visual"):
        model(ids, v, detectors=[a, v])
    with pytest.raises(ValueError, match=r"modality_order: expected 2 distinct detector names"):
        ITHPDeberta(tiny_backbone_config(), tiny_ithp(), modality_order=("visual", "visual"))
    with pytest.raises(ValueError, match=r"modality_order: expected 2 distinct detector names"):
        ITHPDeberta(tiny_backbone_config(), tiny_ithp(), modality_order=("visual",))

"""A state_dict saved from the authors' ITHP-DeBERTa loads strictly into ``ithp_fast.ITHPDeberta``.

The authors' classes are rebuilt here with their attribute names and their forward (a tiny
random DeBERTa-v2 backbone, no download): ``ITHP_DeBertaForSequenceClassification`` holds
``dberta`` (``ITHP_DebertaModel``: ``model``, ``ITHP``, ``expand = Sequential(Linear)``,
``LayerNorm``, ``dropout``, ``pooler.dense``), ``dropout`` and ``classifier``. Their ITHP has the
reference's layout; their eval forward samples, so its noise is zeroed to compare with our
posterior mean.
"""

import pytest
import torch
from helpers import TOLERANCES
from safetensors.torch import load_model, save_file
from torch import nn
from transformers import DebertaV2Config, DebertaV2Model

import ithp_fast
from ithp_fast import ITHPConfig, ITHPDeberta
from ithp_fast.reference import ITHP as ReferenceITHP

HIDDEN = 32


def backbone_config():
    return DebertaV2Config(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                           vocab_size=100, max_position_embeddings=64, relative_attention=True, position_buckets=8,
                           pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", position_biased_input=False)


ITHP_ARGS = ITHPConfig(X0_dim=HIDDEN, X1_dim=7, X2_dim=5, inter_dim=16, B0_dim=8, B1_dim=6)


class AuthorsPooler(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden_states):
        return torch.tanh(self.dense(hidden_states[:, 0]))


class AuthorsDebertaModel(nn.Module):
    """The authors' ``ITHP_DebertaModel``: attribute names and forward as theirs."""

    def __init__(self, config, ithp_args, beta_shift=1.0, dropout_prob=0.5):
        super().__init__()
        self.model = DebertaV2Model(config)
        self.ITHP = ReferenceITHP(ithp_args)
        self.expand = nn.Sequential(nn.Linear(ithp_args.B1_dim, config.hidden_size))
        self.LayerNorm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(dropout_prob)
        self.beta_shift = beta_shift
        self.pooler = AuthorsPooler(config.hidden_size)

    def forward(self, input_ids, visual, acoustic):
        x = self.model(input_ids)[0]
        b1, IB_total, kl0, mse0, kl1, mse1 = self.ITHP(x, visual, acoustic)
        sequence_output = self.dropout(self.LayerNorm(self.beta_shift * self.expand(b1) + x))
        return self.pooler(sequence_output), IB_total, kl0, mse0, kl1, mse1


class AuthorsForSequenceClassification(nn.Module):
    """The authors' ``ITHP_DeBertaForSequenceClassification``."""

    def __init__(self, config, ithp_args, num_labels=1):
        super().__init__()
        self.dberta = AuthorsDebertaModel(config, ithp_args)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids, visual, acoustic):
        pooled, IB_total, kl0, mse0, kl1, mse1 = self.dberta(input_ids, visual, acoustic)
        return self.classifier(self.dropout(pooled)), IB_total, kl0, mse0, kl1, mse1


def batch(b=3, t=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (b, t), generator=g)
    return ids, torch.rand(b, t, 5, generator=g), torch.rand(b, t, 7, generator=g)


def authors_state_dict(tmp_path):
    """A state_dict written by ``torch.save`` from the authors' layout and read back."""
    torch.manual_seed(3)
    authors = AuthorsForSequenceClassification(backbone_config(), ITHP_ARGS).eval()
    torch.save(authors.state_dict(), tmp_path / "pytorch_model.bin")
    return authors, torch.load(tmp_path / "pytorch_model.bin", weights_only=True)


def ours(ithp_cls):
    return ITHPDeberta(backbone_config(), ITHP_ARGS, ithp_cls=ithp_cls, eval_sampling="mean",
                       pass_attention_mask=False).eval()  # the authors pass no mask


def test_keys_and_shapes_are_the_authors():
    authors = AuthorsForSequenceClassification(backbone_config(), ITHP_ARGS)
    want = {k: tuple(v.shape) for k, v in authors.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours(ithp_fast.ITHP).state_dict().items()}
    assert got == want


@pytest.mark.parametrize("ithp_cls", [ReferenceITHP, ithp_fast.ITHP])
def test_authors_state_dict_loads_strictly_and_gives_their_outputs(tmp_path, monkeypatch, ithp_cls):
    authors, state = authors_state_dict(tmp_path)
    model = ours(ithp_cls)
    model.load_state_dict(state, strict=True)
    ids, visual, acoustic = batch()
    with torch.no_grad():
        got = model(ids, visual, acoustic)
        monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # their eval draws: zero noise is b = mu
        want = authors(ids, visual, acoustic)
    torch.testing.assert_close(got.logits, want[0], **TOLERANCES[torch.float32])
    torch.testing.assert_close(got.IB_total, want[1], **TOLERANCES[torch.float32])


def project_first_layout(state: dict) -> dict:
    """The keys this project wrote before ``expand`` became a Sequential."""
    return {k.replace("dberta.expand.0.", "dberta.expand."): v for k, v in state.items()}


def test_checkpoints_with_a_bare_linear_expand_still_load(tmp_path):
    torch.manual_seed(5)
    source = ours(ithp_fast.ITHP)
    old = project_first_layout(source.state_dict())
    assert "dberta.expand.weight" in old and "dberta.expand.0.weight" not in old
    ids, visual, acoustic = batch()
    with torch.no_grad():
        want = source(ids, visual, acoustic).logits
    torch.manual_seed(6)
    through_torch = ours(ithp_fast.ITHP)
    through_torch.load_state_dict(old, strict=True)
    save_file({k: v.contiguous() for k, v in old.items()}, tmp_path / "model.safetensors")
    through_safetensors = ours(ReferenceITHP)
    load_model(through_safetensors, tmp_path / "model.safetensors", strict=True)  # as checkpoints load
    with torch.no_grad():
        for model in (through_torch, through_safetensors):
            torch.testing.assert_close(model(ids, visual, acoustic).logits, want, rtol=0, atol=0)

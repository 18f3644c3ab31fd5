"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

import textwrap

import torch

from ithp_fast import ITHPConfig

# Per-dtype tolerances for fast path vs reference on the same inputs and noise.
# float32: the same math in another order; bfloat16: 8-bit mantissa, float32 accumulation.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}


def small_config(**overrides) -> ITHPConfig:
    """A small ITHP config for fast tests (odd widths on purpose)."""
    base = dict(X0_dim=24, X1_dim=7, X2_dim=5, inter_dim=16, B0_dim=8, B1_dim=6, drop_prob=0.3)
    base.update(overrides)
    return ITHPConfig(**base)


def make_inputs(cfg: ITHPConfig, lead=(3, 5), dtype=torch.float32, device="cpu", seed=0):
    """Random ``(x, visual, acoustic)`` with detectors in [0, 1] like min-max normalised features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, cfg.X0_dim, generator=g)
    visual = torch.rand(*lead, cfg.X2_dim, generator=g)
    acoustic = torch.rand(*lead, cfg.X1_dim, generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, visual, acoustic))


def make_noise(cfg: ITHPConfig, lead=(3, 5), dtype=torch.float32, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*lead, d, generator=g).to(device=device, dtype=dtype) for d in (cfg.B0_dim, cfg.B1_dim))


# N-level configs for the tests: small odd widths, one detector and one latent width per level.
LEVEL_WIDTHS = {
    1: dict(detector_dims=(7,), bottleneck_dims=(8,), detector_weights=(8.0,)),
    2: dict(detector_dims=(7, 5), bottleneck_dims=(8, 6), detector_weights=(8.0, 32.0)),
    3: dict(detector_dims=(7, 5, 3), bottleneck_dims=(8, 6, 5), detector_weights=(8.0, 32.0, 4.0)),
    4: dict(detector_dims=(7, 5, 3, 9), bottleneck_dims=(8, 6, 5, 4), detector_weights=(8.0, 32.0, 4.0, 2.0),
            level_weights=(1.0, 0.5, 0.25, 2.0)),
}


def level_config(levels: int, **overrides) -> ITHPConfig:
    """A small ``levels``-level config (two levels: the same widths as :func:`small_config`)."""
    base = dict(X0_dim=24, inter_dim=16, drop_prob=0.3, **LEVEL_WIDTHS[levels])
    base.update(overrides)
    return ITHPConfig(**base)


def make_level_inputs(cfg: ITHPConfig, lead=(3, 5), dtype=torch.float32, device="cpu", seed=0):
    """``(x, detectors)``: random text features and one detector per level in [0, 1], in level order."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, cfg.X0_dim, generator=g).to(device=device, dtype=dtype)
    detectors = tuple(torch.rand(*lead, d, generator=g).to(device=device, dtype=dtype) for d in cfg.detector_dims)
    return x, detectors


def make_level_noise(cfg: ITHPConfig, lead=(3, 5), dtype=torch.float32, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*lead, d, generator=g).to(device=device, dtype=dtype) for d in cfg.bottleneck_dims)


def token_mask(lengths, tokens: int, device="cpu") -> torch.Tensor:
    """``[len(lengths), tokens]`` bool: the first ``lengths[i]`` tokens of example i are real."""
    return torch.arange(tokens, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]


# Masks of every shape for [3, 5] inputs: none masked, all masked, ragged lengths.
TOKEN_MASKS = {"none-masked": [5, 5, 5], "all-masked": [0, 0, 0], "ragged": [5, 2, 0]}


TINY_TRAINING = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32, inter_dim=32, b0_dim=16, b1_dim=8,
                     progress=False, plots=False, device="cpu", threads=1)
"""A tiny training run: keyword arguments of ``TrainConfig`` / ``ithp_fast.train`` (CPU seconds)."""


def as_flags(settings: dict) -> list:
    """``settings`` as ``ithp-fast train`` flags (``True`` -> ``--name``, ``False`` -> ``--no-name``)."""
    flags = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


TEXT_WORDS = ["i", "really", "love", "this", "movie", "the", "plot", "was", "dull", "not", "good", "great"]
TEXTS = ["I really love this movie", "the plot was dull", "not good", "this movie was not great"]
"""Texts for :func:`tiny_text_model`, every word of them in :data:`TEXT_WORDS`."""
LONG = "the plot was dull this movie was not great"
"""9 words: more than :func:`tiny_text_model`'s 8 tokens, so cut to 6 between ``[CLS]`` and ``[SEP]``."""


def stand_in_scores(texts):
    """A stand-in model's ``ScoredTexts`` for ``texts``: each text scores its length in characters, none is cut."""
    from ithp_fast.serving.tokens import ScoredTexts

    return ScoredTexts([float(len(t)) for t in texts], [False] * len(texts), 0, 0, True)


def tiny_text_model(*, pass_attention_mask: bool = True, max_seq_length: int = 8, seed: int = 0, fast: bool = True):
    """A tiny random ITHP-DeBERTa (relative attention, as DeBERTa-v3) in eval mode with the posterior mean and a
    word-level tokenizer over :data:`TEXT_WORDS`: text in, score out, in a fraction of a second."""
    from transformers import DebertaV2Config

    import ithp_fast
    from ithp_fast.data import WordVocabulary

    vocab = WordVocabulary(TEXT_WORDS)
    backbone = DebertaV2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                               vocab_size=vocab.vocab_size, max_position_embeddings=64, relative_attention=True,
                               position_buckets=16, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                               share_att_key=True, position_biased_input=False, type_vocab_size=0)
    torch.manual_seed(seed)
    config = ithp_fast.ITHPDebertaConfig(
        backbone=backbone, ithp=ITHPConfig(X0_dim=16, X1_dim=7, X2_dim=5, inter_dim=8, B0_dim=6, B1_dim=4),
        pass_attention_mask=pass_attention_mask, max_seq_length=max_seq_length, eval_sampling="mean",
        backend="auto" if fast else "reference")
    model = ithp_fast.ITHPDeberta(config, tokenizer=vocab.to_tokenizer(max_seq_length))
    with torch.no_grad():  # weights large enough that every input moves the score
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def onnx_scores(bundle, texts: list) -> list:
    """The scores of ``texts`` from the ONNX bundle in the folder ``bundle`` (a ``Path``), read with the
    ``tokenizers`` package and run in ONNX Runtime alone, as a user without ithp_fast would."""
    import numpy as np
    import onnxruntime
    import tokenizers

    encodings = tokenizers.Tokenizer.from_file(str(bundle / "tokenizer.json")).encode_batch(texts)
    feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
    return onnxruntime.InferenceSession(str(bundle / "model.onnx")).run(["logits"], feeds)[0][:, 0].tolist()


def refuse_imports(*names: str) -> str:
    """Python source to run first in a fresh interpreter: importing the packages ``names`` (and their submodules)
    then fails as if they were not installed."""
    return textwrap.dedent(f"""
        import importlib.abc, sys
        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {names!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Refuse())
    """)

"""End-to-end ITHP-DeBERTa inference: backbone + ITHP + fusion + head, eval mode, no grad.

Providers: ``reference`` (the released computation: the full ITHP forward inside, all six
outputs), ``ithp_fast`` (the same model with the drop-in ``ithp_fast.ITHP``),
``ithp_fast.deberta_logits`` (the eager logits-only fast path: ITHP's ``encode`` instead of its
losses), ``ithp_fast+graphs`` (CUDA: ``ServingDeberta``, one CUDA-graph bucket of the shape),
``ithp_fast+onnxruntime`` (CPU: ``ServingDeberta(runtime="onnxruntime")``), and the logits
exported by ``ithp_fast.export`` (posterior mean, dynamic batch) run in ``onnxruntime`` and as an
``aoti`` package (CPU; skipped when the package is missing, ``aoti`` not in tiny mode).

On CUDA the backbone has the shape of deberta-v3-base (12 layers, hidden 768, relative attention),
randomly initialised: nothing is downloaded. On the CPU a small random config of the same kind
(so the suite stays within its time budget), or deberta-v3-base's with ``ITHP_BENCH_DEBERTA=base``;
in tiny mode the smallest one.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
from scale import CUDA, DEVICE, SCALE, TOKENS, pick
from workloads import eval_sampling, exported_file, load_exported

from ithp_fast.serving import ServingDeberta, deberta_logits

BATCHES = pick(cuda=[1, 32], cpu=[1, 8], tiny=[2])
PROVIDERS = ["reference", "ithp_fast", "ithp_fast.deberta_logits"] + (
    ["ithp_fast+graphs"] if CUDA else ["ithp_fast+onnxruntime", "onnxruntime", "aoti"])

# deberta-v3-base's architecture; smaller widths and depths off the GPU.
_V3_BASE = dict(
    vocab_size=128100,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    relative_attention=True,
    position_buckets=256,
    max_relative_positions=-1,
    norm_rel_ebd="layer_norm",
    share_att_key=True,
    pos_att_type=["p2c", "c2p"],
    position_biased_input=False,
    type_vocab_size=0,
    layer_norm_eps=1e-7,
)
_SHAPES = {
    "cuda": {},
    "cpu": dict(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "tiny": dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
}


BASE_ON_DEMAND = SCALE == "cpu" and os.environ.get("ITHP_BENCH_DEBERTA", "") == "base"
"""``ITHP_BENCH_DEBERTA=base``: deberta-v3-base's shape on the CPU too."""


def shape_name() -> str:
    return "deberta-v3-base shape" if SCALE == "cuda" or BASE_ON_DEMAND else "small config"


def backbone_config():
    """deberta-v3-base's config (CUDA, or ``ITHP_BENCH_DEBERTA=base``) or a smaller one of the
    same architecture (CPU / tiny)."""
    from transformers import DebertaV2Config

    return DebertaV2Config(**{**_V3_BASE, **({} if BASE_ON_DEMAND else _SHAPES[SCALE])})


@functools.lru_cache(maxsize=1)
def deberta_pair():
    """The reference ITHP-DeBERTa and the same weights with ``ithp_fast.ITHP``, built once on the device."""
    import ithp_fast
    from ithp_fast import ITHPConfig, ITHPDeberta

    backbone = backbone_config()
    cfg = ITHPConfig.for_dataset("mosi", X0_dim=backbone.hidden_size)
    torch.manual_seed(0)
    with torch.device(DEVICE):  # initialise on the device: deberta-v3-base is 184M parameters
        reference = ITHPDeberta(backbone, cfg, eval_sampling=eval_sampling()).eval()
        fast = ITHPDeberta(backbone, cfg, ithp_cls=ithp_fast.ITHP, eval_sampling=eval_sampling()).eval()
    fast.load_state_dict(reference.state_dict(), strict=True)
    return reference, fast


@functools.lru_cache(maxsize=None)
def exported_deberta_file(fmt: str) -> str:
    """The fast model's logits (posterior mean) exported once, dynamic batch."""
    return exported_file(deberta_pair()[1], fmt, TOKENS)


@functools.lru_cache(maxsize=None)
def exported_deberta(fmt: str):
    return load_exported(exported_deberta_file(fmt), fmt)


@functools.lru_cache(maxsize=1)
def onnxruntime_server():
    """``ServingDeberta(runtime="onnxruntime")`` of a posterior-mean copy of the fast model."""
    import copy

    model = copy.deepcopy(deberta_pair()[1])
    model.ithp.eval_sampling = "mean"
    return ServingDeberta(model, tokens=TOKENS, runtime="onnxruntime", onnx_file=exported_deberta_file("onnxruntime"))


def deberta_fn(provider: str, batch: int):
    reference, fast = deberta_pair()
    backbone, cfg = reference.dberta.model.config, reference.ithp.config
    g = torch.Generator().manual_seed(batch)
    input_ids = torch.randint(0, backbone.vocab_size, (batch, TOKENS), generator=g).to(DEVICE)
    mask = torch.ones(batch, TOKENS, dtype=torch.long, device=DEVICE)
    visual = torch.rand(batch, TOKENS, cfg.X2_dim, generator=g).to(DEVICE)
    acoustic = torch.rand(batch, TOKENS, cfg.X1_dim, generator=g).to(DEVICE)
    if provider in ("reference", "ithp_fast"):
        model = reference if provider == "reference" else fast
        return torch.no_grad()(lambda: tuple(model(input_ids, visual, acoustic, mask)))  # the authors' 6-tuple
    if provider == "ithp_fast.deberta_logits":
        return torch.no_grad()(lambda: deberta_logits(fast, input_ids, mask))
    if provider == "ithp_fast+onnxruntime":
        serve = onnxruntime_server()
        return lambda: serve(input_ids, mask)
    if provider in ("onnxruntime", "aoti"):
        program = exported_deberta(provider)
        if provider == "aoti":
            return torch.no_grad()(lambda: program(input_ids, mask))
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()}
        return lambda: program(None, feeds)
    if provider == "ithp_fast+graphs":
        serve = ServingDeberta(fast, batch_sizes=[batch], tokens=TOKENS)
        return torch.no_grad()(lambda: serve(input_ids, mask))
    raise ValueError(f"provider: unknown {provider!r}")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
def test_ithp_deberta(measure, batch, provider):
    fn = deberta_fn(provider, batch)
    measure(fn, group=f"ITHP-DeBERTa B={batch} ({shape_name()})", provider=provider,
            extra={"dtype": "float32", "batch": batch})

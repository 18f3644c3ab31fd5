"""The model of a run: its backbone, ITHP-DeBERTa around it, the optimiser's parameter groups,
and the tokenizer entry a checkpoint records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from torch import nn

from ..checks import AUTO, BACKEND_CHOICES, check_choice, renamed_settings
from ..config import ITHPConfig
from ..data import DataFormatError, PretrainedWordTokenizer, SentimentData, WordVocabulary
from ..data.tokenize import TOKENIZER_FILE
from ..deberta_config import ITHPDebertaConfig
from ..reference.deberta import RELEASED_ORDER, load_backbone
from .checkpoints import verify_tokenizer_files
from .config import TrainConfig

if TYPE_CHECKING:  # the Hugging Face model loads transformers' modeling code (seconds): imported when built
    from ..deberta import ITHPDeberta


def small_backbone_config(vocab_size: int, cfg: TrainConfig):
    """A small DeBERTa-v2 configuration with DeBERTa-v3's attention layout, randomly initialised."""
    from transformers import DebertaV2Config

    return DebertaV2Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=64,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        type_vocab_size=0,
        pad_token_id=0,
    )


def model_modalities(model_config: dict) -> tuple[str, ...]:
    """The detector of each ITHP level of a checkpoint's ``model`` config (the released order when it names none)."""
    return tuple(model_config.get("modality_order", RELEASED_ORDER))


def model_settings(config: dict) -> ITHPDebertaConfig:
    """The model of a checkpoint's settings (:func:`~ithp_fast.training.checkpoints.load_config`): its
    ``config.json``, or the ``model`` entry an earlier version wrote (with the run's token count)."""
    model = config["model"]
    if "model_type" in model:
        return ITHPDebertaConfig.from_dict(model)
    return ITHPDebertaConfig(
        backbone=model["backbone"],
        ithp=model["ithp"],
        beta_shift=model["beta_shift"],
        dropout_prob=model["dropout_prob"],
        pass_attention_mask=model["pass_attention_mask"],
        mask_ithp_padding=model.get("mask_ithp_padding", False),
        modality_order=model.get("modality_order", RELEASED_ORDER),
        eval_sampling=model["eval_sampling"],
        backend=renamed_settings(config, "config.json").get("backend", AUTO),  # "impl" then
        max_seq_length=config.get("run", {}).get("max_seq_length", 50),
        backbone_path=model.get("backbone_path"),
    )


def build_model(settings: ITHPDebertaConfig, backend: Optional[str] = None,
                backbone: Optional[nn.Module] = None) -> ITHPDeberta:
    """ITHP-DeBERTa from its settings (random backbone weights unless ``backbone`` is given); ``backend``
    replaces the settings' (what computes ITHP)."""
    from ..deberta import ITHPDeberta

    if backend is not None:
        settings.backend = check_choice(backend, BACKEND_CHOICES, "backend")
    return ITHPDeberta(settings, backbone=backbone)


def new_model(cfg: TrainConfig, data: SentimentData) -> tuple[ITHPDeberta, dict]:
    """A fresh model for ``data`` and its config (a dict: ``config.json`` of its checkpoints); detector
    widths come from the data."""
    backbone = load_backbone(cfg.backbone or small_backbone_config(data.vocab_size, cfg), dropout=cfg.backbone_dropout)
    if data.vocab_size > backbone.config.vocab_size:
        raise DataFormatError(
            data.source,
            f"token ids reach {data.vocab_size - 1} but the backbone's vocab_size is {backbone.config.vocab_size}",
        )
    settings = ITHPDebertaConfig(
        backbone=backbone.config,
        ithp=ithp_config(cfg, backbone.config.hidden_size, data),
        beta_shift=cfg.beta_shift,
        dropout_prob=cfg.fusion_dropout,
        pass_attention_mask=cfg.attention_mask,
        mask_ithp_padding=cfg.mask_padding,
        modality_order=cfg.detector_names,
        eval_sampling=cfg.eval_sampling,
        backend=cfg.backend,
        max_seq_length=cfg.max_seq_length,
        backbone_path=cfg.backbone,
    )
    model = build_model(settings, backbone=backbone)
    return model, model.config.to_dict()


def ithp_config(cfg: TrainConfig, hidden_size: int, data: SentimentData) -> ITHPConfig:
    """ITHP's levels in ``--modality-order``: level k predicts the k-th detector named after text, with its
    width from the data and the settings of level k (``--b0-dim`` / ``--p-beta`` for level 1, ``--b1-dim`` /
    ``--p-gamma`` / ``--p-lambda`` for level 2). The released order gives the released config."""
    levels = len(cfg.detector_names)
    dims = data.detector_dims
    return ITHPConfig(
        X0_dim=hidden_size,
        inter_dim=cfg.inter_dim,
        drop_prob=cfg.ithp_dropout,
        max_sen_len=cfg.max_seq_length,
        detector_dims=tuple(dims[name] for name in cfg.detector_names),
        bottleneck_dims=(cfg.b0_dim, cfg.b1_dim)[:levels],
        detector_weights=(cfg.p_beta, cfg.p_gamma)[:levels],
        level_weights=(1.0, cfg.p_lambda)[:levels],
        p_lambda=cfg.p_lambda,
    )


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on every parameter except biases and LayerNorm weights."""
    norm = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or id(p) in norm else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def tokenizer_entry(data: SentimentData) -> dict:
    """How a checkpoint turns words into ids: its own vocabulary, a pretrained tokenizer, or ids in the data."""
    if isinstance(data.tokenizer, WordVocabulary):
        return {"kind": "word-vocabulary", "file": TOKENIZER_FILE}
    if isinstance(data.tokenizer, PretrainedWordTokenizer):
        return {"kind": "pretrained"}
    return {"kind": "ids-in-data"}


def load_tokenizer(entry: dict, directory: str):
    """The tokenizer a checkpoint directory carries, as the data loaders use it (None when the data holds
    token ids)."""
    verify_tokenizer_files(directory)
    if entry["kind"] == "word-vocabulary":
        return WordVocabulary.load(directory)
    if entry["kind"] == "pretrained":
        return PretrainedWordTokenizer.from_directory(directory)
    return None


def text_tokenizer(config: dict, directory: str, max_length: int):
    """The tokenizer a checkpoint directory carries, as a ``transformers`` tokenizer that reads raw text
    (None when the model was trained on token ids and carries none); an earlier version's vocabulary cuts
    texts at ``max_length`` tokens (the model's ``max_seq_length``)."""
    from ..deberta import load_saved_tokenizer

    verify_tokenizer_files(directory)
    entry = config.get("tokenizer", {})
    if entry.get("kind") == "ids-in-data":
        return None
    saved = load_saved_tokenizer(directory)
    if saved is None and entry.get("kind") == "word-vocabulary":  # an earlier version's vocab.json
        return WordVocabulary.load(directory).to_tokenizer(max_length)
    return saved

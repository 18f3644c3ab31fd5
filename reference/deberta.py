"""ITHP-DeBERTa: a DeBERTa-v2/v3 backbone whose token states are the prime modality of ITHP.

    x      = DeBERTa(input_ids).last_hidden_state                       [B, T, H]
    b1, IB = ITHP(x, visual, acoustic)
    h      = dropout(LayerNorm(x + beta_shift * expand(b1)))
    logits = classifier(dropout(tanh(pooler.dense(h[:, 0]))))

Training loss (spec): ``MSE(logits, label) + 2 / (p_beta + p_gamma) * IB_total`` (for N levels,
``2 / sum(detector_weights)``).

Beyond the released model: ``modality_order`` names the detector of each ITHP level (the released
order is acoustic, then visual), so the same ``forward(input_ids, visual, acoustic, ...)`` runs any
order of two levels, and ``detectors=`` passes N detectors by name or in level order;
``mask_ithp_padding=True`` hands the attention mask to ITHP as its ``token_mask`` (padding then
stays out of ITHP's losses); ``detector_mask`` marks missing detectors per example.

In eval mode the detectors may be left out: ``forward(input_ids, attention_mask)`` gives the logits from
the text alone (ITHP's latent depends on the text only at inference; the terms that need detectors are
None). A model that does not pass the attention mask to its backbone (the authors' script) attends to
padding, so there a text shorter than ``max_seq_length`` is padded to it, as in training: one text gets
one score however it is batched.

Submodule names follow the authors' model (``dberta.model``, ``dberta.ITHP``,
``dberta.expand``, ``dberta.LayerNorm``, ``dberta.pooler.dense``, ``classifier``) so that their
checkpoints map onto this one key for key: ``expand`` is ``Sequential(Linear(B1_dim, hidden))``
as theirs (keys ``dberta.expand.0.weight`` / ``.bias``). Checkpoints written before this
layout (``dberta.expand.weight`` / ``.bias``) still load: a load hook renames the two keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ..checks import Noise, check_token_inputs
from ..config import ConfigLike, ITHPConfig, as_config
from .ithp import ITHP

RELEASED_ORDER = ("acoustic", "visual")
"""The released model's modality order: level 1 predicts acoustic, level 2 visual."""


class TupleOutput(ModelOutput):
    """A Hugging Face ``ModelOutput`` (``out.logits``, ``out["logits"]``) that unpacks like a tuple of the
    values that are set, as the authors' model returns them (``logits, IB_total, ... = model(...)``)."""

    def __iter__(self):
        return iter(self.to_tuple())


@dataclass
class ITHPDebertaOutput(TupleOutput):
    """What [`ITHPDeberta`][ithp_fast.reference.ITHPDeberta] returns for two levels; unpacks like the authors'
    6-tuple (``kl0``, ``mse0`` of the first level, whatever its modality). Without detectors (eval mode) only
    ``logits`` is set."""

    logits: torch.Tensor
    IB_total: Optional[torch.Tensor] = None
    kl0: Optional[torch.Tensor] = None
    mse0: Optional[torch.Tensor] = None
    kl1: Optional[torch.Tensor] = None
    mse1: Optional[torch.Tensor] = None

    @property
    def kl_terms(self) -> tuple[torch.Tensor, ...]:
        return (self.kl0, self.kl1)

    @property
    def mse_terms(self) -> tuple[torch.Tensor, ...]:
        return (self.mse0, self.mse1)


@dataclass
class ITHPDebertaLevelsOutput(TupleOutput):
    """What [`ITHPDeberta`][ithp_fast.reference.ITHPDeberta] returns for other than two levels: one KL and one MSE
    per level."""

    logits: torch.Tensor
    IB_total: Optional[torch.Tensor] = None
    kl_terms: Optional[tuple[torch.Tensor, ...]] = None
    mse_terms: Optional[tuple[torch.Tensor, ...]] = None


class Pooler(nn.Module):
    """BERT-style pooler: the first token through ``Linear(H, H)`` and ``tanh``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))


def _rename_single_linear_expand(module, state_dict, prefix, *_) -> None:
    """Before loading: ``expand.weight`` / ``expand.bias`` (this project's first layout, a bare
    Linear) become ``expand.0.weight`` / ``expand.0.bias`` (the authors' ``Sequential``)."""
    for name in ("weight", "bias"):
        old, new = f"{prefix}expand.{name}", f"{prefix}expand.0.{name}"
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)


class ITHPDebertaBody(nn.Module):
    """Backbone + ITHP + fusion + pooler (the authors' ``ITHP_DebertaModel``)."""

    def __init__(self, backbone: nn.Module, ithp: nn.Module, beta_shift: float, dropout_prob: float) -> None:
        super().__init__()
        hidden = backbone.config.hidden_size
        self.model = backbone
        self.ITHP = ithp
        self.expand = nn.Sequential(nn.Linear(ithp.config.bottleneck_dims[-1], hidden))
        self.LayerNorm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout_prob)
        self.pooler = Pooler(hidden)
        self.beta_shift = beta_shift
        self.register_load_state_dict_pre_hook(_rename_single_linear_expand)

    def fuse(self, x: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
        """``tanh(dense(dropout(LayerNorm(x + beta_shift * expand(b1)))[:, 0]))``."""
        return self.pooler(self.dropout(self.LayerNorm(x + self.beta_shift * self.expand(b1))))


class ITHPDeberta(nn.Module):
    """ITHP-DeBERTa sentiment model (regression with ``num_labels=1``).

    Args:
        backbone: a ``transformers`` DeBERTa-v2 config (random initialisation: no download),
            a path to a local pretrained directory (loaded with ``local_files_only=True``), or
            an already built ``DebertaV2Model``.
        ithp_args: the ITHP config; ``X0_dim`` must equal the backbone's hidden size. Default:
            the paper's config with ``X0_dim`` set to the hidden size.
        num_labels: classifier outputs (1 for sentiment regression).
        beta_shift: scale of the ITHP contribution added to the token states.
        dropout_prob: dropout after the LayerNorm (paper: 0.5).
        pass_attention_mask: pass ``attention_mask`` to the backbone (default). The authors'
            script passes none; ``False`` reproduces that.
        mask_ithp_padding: pass ``attention_mask`` to ITHP as ``token_mask`` too, so padded tokens
            stay out of its KL and MSE means (default off: the released model averages over them).
        modality_order: the name of each level's detector, in level order (one per ITHP level;
            ``ithp_args``' ``detector_dims`` follow this order). Default: the released
            ``("acoustic", "visual")``.
        max_seq_length: the tokens per example in training. Only read by a model that does not pass
            the attention mask: its text-only inputs are padded to this length, as in training.
        ithp_cls: the ITHP implementation (the reference class by default; ``ithp_fast.ITHP``
            for the fast path). Extra keyword arguments go to its constructor.
    """

    def __init__(
        self,
        backbone: Union["object", str, os.PathLike, nn.Module],
        ithp_args: Optional[ConfigLike] = None,
        *,
        num_labels: int = 1,
        beta_shift: float = 1.0,
        dropout_prob: float = 0.5,
        pass_attention_mask: bool = True,
        mask_ithp_padding: bool = False,
        modality_order: Sequence[str] = RELEASED_ORDER,
        max_seq_length: Optional[int] = None,
        ithp_cls: type = ITHP,
        **ithp_kwargs,
    ) -> None:
        super().__init__()
        backbone = load_backbone(backbone)
        cfg = ITHPConfig(X0_dim=backbone.config.hidden_size) if ithp_args is None else as_config(ithp_args)
        self.pass_attention_mask = pass_attention_mask
        self.mask_ithp_padding = bool(mask_ithp_padding)
        self.max_seq_length = max_seq_length
        self.build(backbone, ithp_cls(cfg, **ithp_kwargs), num_labels, beta_shift, dropout_prob, modality_order)

    def build(self, backbone: nn.Module, ithp: nn.Module, num_labels: int, beta_shift: float, dropout_prob: float,
              modality_order: Sequence[str]) -> None:
        """Add the submodules (the authors' names) around ``backbone`` and ``ithp``."""
        hidden = backbone.config.hidden_size
        if ithp.config.X0_dim != hidden:
            raise ValueError(f"ithp_args: X0_dim={ithp.config.X0_dim} must equal the backbone's hidden_size={hidden}")
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels: expected a positive int, got {num_labels!r}")
        self.num_labels = num_labels
        self.modality_order = check_modality_order(modality_order, ithp.config.levels)
        self.dberta = ITHPDebertaBody(backbone, ithp, beta_shift, dropout_prob)
        self.dropout = nn.Dropout(backbone.config.hidden_dropout_prob)
        self.classifier = nn.Linear(hidden, num_labels)

    @property
    def ithp(self) -> nn.Module:
        return self.dberta.ITHP

    def forward(
        self,
        input_ids: torch.Tensor,
        visual: Optional[torch.Tensor] = None,
        acoustic: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        *,
        detectors: Union[Mapping[str, torch.Tensor], Sequence[torch.Tensor], None] = None,
        detector_mask: Optional[torch.Tensor] = None,
        noise: Noise = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> Union[ITHPDebertaOutput, ITHPDebertaLevelsOutput]:
        """``input_ids`` ``[B, T]``; ``visual`` ``[B, T, X2_dim]``; ``acoustic`` ``[B, T, X1_dim]``.

        ``visual`` / ``acoustic`` are the detectors of those names, whatever level
        ``modality_order`` gives them; ``detectors`` passes them all instead, by name (a dict) or in
        level order (a sequence). ``detector_mask`` ``[B, N]`` (bool, level order): which examples
        have each detector. ``noise``: one eps per level. In eval mode the detectors may be left out
        (``model(input_ids, attention_mask=mask)``): the output then holds the logits alone.
        ``token_type_ids`` is accepted for tokenizers that return it and not used (as in the
        authors' model).
        """
        check_token_inputs(input_ids, attention_mask)
        if not self.training and visual is None and acoustic is None and detectors is None and detector_mask is None:
            return ITHPDebertaOutput(self.text_logits(input_ids, attention_mask, noise))
        levels = self.level_detectors(visual, acoustic, detectors)
        mask = attention_mask if self.pass_attention_mask else None
        x = self.dberta.model(input_ids, attention_mask=mask).last_hidden_state
        token_mask = attention_mask.bool() if self.mask_ithp_padding and attention_mask is not None else None
        ithp = self.dberta.ITHP
        if self.modality_order == RELEASED_ORDER and token_mask is None and detector_mask is None:
            b, IB_total, kl0, mse0, kl1, mse1 = ithp(x, levels[1], levels[0], noise=noise)  # the released call
            kl_terms, mse_terms = (kl0, kl1), (mse0, mse1)
        else:
            b, IB_total, kl_terms, mse_terms = ithp.forward_levels(x, levels, noise=noise, token_mask=token_mask,
                                                                   detector_mask=detector_mask)
        logits = self.classifier(self.dropout(self.dberta.fuse(x, b)))
        if len(kl_terms) == 2:
            return ITHPDebertaOutput(logits, IB_total, kl_terms[0], mse_terms[0], kl_terms[1], mse_terms[1])
        return ITHPDebertaLevelsOutput(logits, IB_total, tuple(kl_terms), tuple(mse_terms))

    def text_logits(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                    noise: Noise = None) -> torch.Tensor:
        """The logits ``[B, num_labels]`` from the text alone: ``b1`` of ITHP's ``encode`` (the posterior
        mean, or a draw where the model samples in eval mode; ``noise`` one eps per level)."""
        input_ids, attention_mask = backbone_inputs(self, input_ids, attention_mask)
        x = self.dberta.model(input_ids, attention_mask=attention_mask).last_hidden_state
        sample = self.ithp.samples_now
        b = self.ithp.encode(x, sample=sample, noise=noise if sample else None)
        return self.classifier(self.dropout(self.dberta.fuse(x, b)))

    def level_detectors(self, visual=None, acoustic=None, detectors=None) -> tuple[torch.Tensor, ...]:
        """The detector tensors in level order, from ``visual`` / ``acoustic`` or ``detectors``."""
        named = {name: t for name, t in (("visual", visual), ("acoustic", acoustic)) if t is not None}
        if detectors is not None:
            if named:
                raise ValueError(f"detectors: given together with {' and '.join(named)}; pass every detector "
                                 f"through detectors= (names {list(self.modality_order)})")
            if not isinstance(detectors, Mapping):
                return tuple(detectors)
            named = dict(detectors)
        if set(named) != set(self.modality_order):
            raise ValueError(f"detectors: expected one tensor for each of {list(self.modality_order)} "
                             f"(modality_order), got {sorted(named)}")
        return tuple(named[name] for name in self.modality_order)

    def training_loss(self, output: ITHPDebertaOutput, labels: torch.Tensor) -> torch.Tensor:
        """The spec's loss: ``MSE(logits, labels) + 2 / (p_beta + p_gamma) * IB_total``."""
        cfg = self.ithp.config
        logits = output.logits
        if labels.numel() != logits.numel():
            raise ValueError(f"labels: expected {logits.numel()} values (one per logit), got shape "
                             f"{tuple(labels.shape)}")
        task = F.mse_loss(logits.reshape(-1).float(), labels.reshape(-1).float())
        return task + 2.0 / sum(cfg.detector_weights) * output.IB_total


def check_modality_order(order: Sequence[str], levels: int) -> tuple[str, ...]:
    """``order`` as a tuple of distinct names, one per ITHP level."""
    if isinstance(order, str) or not isinstance(order, Sequence) or not all(isinstance(n, str) for n in order):
        raise TypeError(f"modality_order: expected a sequence of detector names, one per level, got {order!r}")
    order = tuple(order)
    if len(order) != levels or len(set(order)) != len(order):
        raise ValueError(f"modality_order: expected {levels} distinct detector names (one per ITHP level), "
                         f"got {order!r}")
    return order


def backbone_tokens(model: nn.Module, tokens: int) -> int:
    """How many tokens the backbone of ``model`` reads for ``tokens`` tokens of text alone (see
    :func:`backbone_inputs`)."""
    max_len = None if model.pass_attention_mask else getattr(model, "max_seq_length", None)
    return tokens if max_len is None else torch.sym_max(tokens, max_len)


def backbone_inputs(model: nn.Module, input_ids: torch.Tensor,
                    attention_mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """What the backbone of ``model`` reads for text alone: ``(input_ids, attention_mask)`` as given when the
    model passes the mask; otherwise the mask is dropped (the backbone attends to every token, as in the
    authors' script) and ids shorter than the model's ``max_seq_length`` are padded to it with the
    backbone's pad token, as every training example was: one text then gets one score however it is
    padded or batched."""
    if model.pass_attention_mask:
        return input_ids, attention_mask
    extra = backbone_tokens(model, input_ids.shape[1]) - input_ids.shape[1]
    pad_id = model.dberta.model.config.pad_token_id or 0
    return F.pad(input_ids, (0, extra), value=pad_id), None


def load_backbone(backbone, *, dropout: Optional[float] = None) -> nn.Module:
    """A ``DebertaV2Model`` from a config, a local directory or a built module; never downloads.

    ``dropout`` (optional) replaces the hidden and attention dropout of a config or a directory's
    config; a built module is returned as it is.
    """
    from transformers import DebertaV2Config, DebertaV2Model, PretrainedConfig

    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    if isinstance(backbone, nn.Module):
        return backbone
    if isinstance(backbone, PretrainedConfig):
        if overrides or not isinstance(backbone, DebertaV2Config):
            backbone = DebertaV2Config(**{**backbone.to_dict(), **overrides})
        return DebertaV2Model(backbone)
    if isinstance(backbone, (str, os.PathLike)):
        path = os.fspath(backbone)
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"backbone: {path!r} is not a local directory. Nothing is downloaded: save the model "
                f"(config.json, weights and tokenizer) to a directory first and pass that directory"
            )
        try:
            config = DebertaV2Config.from_pretrained(path, local_files_only=True, **overrides)
            return DebertaV2Model.from_pretrained(path, config=config, local_files_only=True)
        except OSError as exc:
            problem = f"backbone: cannot load a DeBERTa-v2/v3 model from {path!r} offline ({exc})"
            raise FileNotFoundError(problem) from exc
    raise TypeError(
        f"backbone: expected a DebertaV2Config, a local directory or an nn.Module, got {type(backbone).__name__}"
    )

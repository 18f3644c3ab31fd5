"""The logits of an ``ITHPDeberta`` from its backbone's first-token states and a ``b1`` of them:
what ``ServingDeberta`` / ``deberta_logits`` run and what ``ithp_fast.export`` traces (a leaf of
``serving/``: both sides import it, so neither imports the other)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..reference.deberta import backbone_inputs


def backbone_states(backbone: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor,
                     relative_pos: Optional[torch.Tensor]) -> torch.Tensor:
    """The backbone's last hidden states. With ``relative_pos`` given (built ahead of a CUDA-graph
    capture: building it copies a host scalar to the device), embeddings and encoder are called
    as ``DebertaV2Model.forward`` calls them, with that tensor passed in."""
    if relative_pos is None:
        return backbone(input_ids, attention_mask=mask).last_hidden_state
    states = backbone.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids), mask=mask)
    return backbone.encoder(states, mask, output_hidden_states=False, relative_pos=relative_pos).last_hidden_state


def prebuilt_relative_positions(backbone: nn.Module, tokens: int, device: torch.device) -> Optional[torch.Tensor]:
    """DeBERTa's relative positions for ``tokens`` tokens, or None where the backbone has none
    (or is not laid out as ``DebertaV2Model``: then it runs whole)."""
    encoder = getattr(backbone, "encoder", None)
    if not getattr(encoder, "relative_attention", False) or getattr(backbone, "z_steps", 0) > 1 \
            or not hasattr(backbone, "embeddings"):
        return None
    hidden = backbone.config.hidden_size
    return encoder.get_rel_pos(torch.zeros(1, tokens, hidden, device=device))


def first_token_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                       encode_first: Callable[[torch.Tensor], torch.Tensor],
                       relative_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The logits of ``model`` with ``b1 = encode_first(x[:, :1])`` for the first token's states
    ``x[:, :1]`` (``[B, 1, H]``): what the serving wrappers run and what the export traces."""
    body = model.dberta
    input_ids, attention_mask = backbone_inputs(model, input_ids, attention_mask)
    if relative_pos is not None and relative_pos.shape[-1] != input_ids.shape[1]:
        relative_pos = None  # built for another length than the backbone reads
    # The backbone gets a mask tensor always: without one it checks the ids for padding on the
    # host (a device sync, impossible inside a CUDA graph); all ones is what it would assume.
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    first = backbone_states(body.model, input_ids, attention_mask, relative_pos)[:, :1]
    return model.classifier(model.dropout(body.fuse(first, encode_first(first))))

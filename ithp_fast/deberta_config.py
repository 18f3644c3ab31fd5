"""``ITHPDebertaConfig``: the Hugging Face configuration of ITHP-DeBERTa (``model_type`` ``"ithp_deberta"``).

It is what a checkpoint's ``config.json`` holds and what ``ITHPDeberta.from_pretrained``,
``AutoConfig`` and ``AutoModelForSequenceClassification`` read: the backbone's DeBERTa-v2 config
(nested), ITHP's settings (the released ``ITHP_args`` dict, plus the level tuples for other than two
levels), the fusion head's settings, and the task (one regression output by default, labelled
``"sentiment"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Union

from transformers.configuration_utils import PretrainedConfig

from .checks import AUTO, backend_argument
from .config import ITHPConfig, as_config
from .reference.deberta import RELEASED_ORDER
from .reference.ithp import EVAL_SAMPLING

SENTIMENT_LABEL = "sentiment"
"""The name of the one output of a sentiment regression (``id2label``)."""
ON_FIRST_CONFIG: list[Callable[[], None]] = []
"""Called, then forgotten, when a config is made: ``ithp_fast.auto_classes`` puts the import of the model
class here (it registers itself with the Auto model classes), which transformers' import cannot afford.
This module imports transformers' configuration code only (DebertaV2Config when a config is made), so
it can be imported while transformers is loading its Auto classes."""


def _deberta_v3_base():
    """The published backbone's shape (DeBERTa-v3-base), the default when no backbone is given."""
    from transformers import DebertaV2Config

    return DebertaV2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                           vocab_size=128100, max_position_embeddings=512, relative_attention=True,
                           position_buckets=256, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                           share_att_key=True, position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7)


class ITHPDebertaConfig(PretrainedConfig):
    """ITHP-DeBERTa's settings, as Hugging Face reads and writes them.

    Args:
        backbone: the DeBERTa-v2/v3 backbone's config (a ``DebertaV2Config`` or its dict). Default:
            DeBERTa-v3-base's shape.
        ithp: ITHP's config (an [`ithp_fast.ITHPConfig`][] or its dict); ``X0_dim`` must equal the
            backbone's hidden size. Default: the paper's config at that width.
        beta_shift: scale of ``expand(b1)`` added to the token states.
        dropout_prob: dropout after the fusion LayerNorm.
        pass_attention_mask: pass the attention mask to the backbone (the authors' script passes none).
        mask_ithp_padding: give ITHP the attention mask as its token mask (padding out of its losses).
        modality_order: the detector each ITHP level predicts, in level order.
        eval_sampling: ITHP's latent in eval mode: ``"sample"`` (the released behaviour) or ``"mean"``.
        backend: what computes ITHP: ``"auto"`` (``ithp_fast.ITHP``, its backend chosen per device),
            ``"triton"``, ``"torch"``, or ``"reference"`` (the plain-PyTorch reference class). ``impl``
            (``"fast"`` = ``"auto"``, ``"reference"``), its old name, is read too (``config.json`` files
            written before).
        max_seq_length: tokens per example in training; texts are cut to it.
        backbone_path: where the backbone's pretrained weights came from (None: random initialisation).
        label_range: the lowest and highest label in training (what the score means: CMU-MOSI, MOSEI and the
            synthetic set label sentiment from -3, negative, to +3, positive; the regression is not clipped).
        **kwargs: Hugging Face's ``PretrainedConfig`` settings, e.g. ``num_labels``, the classifier's
            outputs (default 1: one sentiment score, ``problem_type`` ``"regression"``, ``id2label``
            ``{0: "sentiment"}``).
    """

    model_type = "ithp_deberta"

    def __init__(
        self,
        *,
        backbone: Union[PretrainedConfig, Mapping, None] = None,
        ithp: Union[ITHPConfig, Mapping, None] = None,
        beta_shift: float = 1.0,
        dropout_prob: float = 0.5,
        pass_attention_mask: bool = True,
        mask_ithp_padding: bool = False,
        modality_order: Sequence[str] = RELEASED_ORDER,
        eval_sampling: str = "sample",
        backend: Optional[str] = None,
        max_seq_length: int = 50,
        backbone_path: Optional[str] = None,
        label_range: Sequence[float] = (-3.0, 3.0),
        **kwargs: Any,
    ) -> None:
        while ON_FIRST_CONFIG:
            ON_FIRST_CONFIG.pop()()
        self.backbone = _backbone_config(backbone)
        hidden = self.backbone.hidden_size
        cfg = ITHPConfig(X0_dim=hidden) if ithp is None else as_config(ithp)
        if cfg.X0_dim != hidden:
            raise ValueError(f"ithp: X0_dim={cfg.X0_dim} must equal the backbone's hidden_size={hidden}")
        self.ithp = cfg.to_dict()
        self.beta_shift = float(beta_shift)
        self.dropout_prob = float(dropout_prob)
        self.pass_attention_mask = bool(pass_attention_mask)
        self.mask_ithp_padding = bool(mask_ithp_padding)
        self.modality_order = list(modality_order)
        self.eval_sampling = _one_of("eval_sampling", eval_sampling, EVAL_SAMPLING)
        self.backend = backend_argument(backend, kwargs.pop("impl", None)) or AUTO
        if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 2:
            raise ValueError(f"max_seq_length: expected an int of 2 or more ([CLS] and [SEP]), got {max_seq_length!r}")
        self.max_seq_length = max_seq_length
        self.backbone_path = backbone_path
        self.label_range = [float(v) for v in label_range]
        self.initializer_range = self.backbone.initializer_range  # what transformers initialises the head with
        if kwargs.get("id2label") is None:
            labels = int(kwargs.pop("num_labels", 1))
            kwargs["id2label"] = {0: SENTIMENT_LABEL} if labels == 1 else {i: f"LABEL_{i}" for i in range(labels)}
            kwargs.setdefault("label2id", {v: k for k, v in kwargs["id2label"].items()})
        else:
            kwargs.pop("num_labels", None)
        if len(kwargs["id2label"]) == 1:
            kwargs.setdefault("problem_type", "regression")
        super().__init__(**kwargs)

    @property
    def ithp_config(self) -> ITHPConfig:
        """ITHP's settings as an [`ithp_fast.ITHPConfig`][]."""
        return ITHPConfig.from_dict(self.ithp)


def _backbone_config(backbone):
    """A ``DebertaV2Config`` from what ``backbone=`` takes."""
    from transformers import DebertaV2Config

    if backbone is None:
        return _deberta_v3_base()
    if isinstance(backbone, DebertaV2Config):
        return backbone
    if isinstance(backbone, PretrainedConfig):
        return DebertaV2Config(**backbone.to_dict())
    if isinstance(backbone, Mapping):
        return DebertaV2Config(**{k: v for k, v in backbone.items() if k not in ("model_type", "transformers_version")})
    raise TypeError(f"backbone: expected a DebertaV2Config or its dict, got {type(backbone).__name__}")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value

"""``ITHPDeberta``: ITHP-DeBERTa as a Hugging Face model (``PreTrainedModel``) that scores text.

The computation is the reference's (:class:`ithp_fast.reference.deberta.ITHPDeberta`, whose
submodule names are the authors' state_dict keys); this class adds what Hugging Face gives a model:
``ITHPDeberta(config)`` from an :class:`ithp_fast.ITHPDebertaConfig`, ``from_pretrained`` /
``save_pretrained`` (weights in ``model.safetensors``, the tokenizer beside them), the Auto classes
(``AutoModelForSequenceClassification``, ``pipeline("text-classification")``), ``model.config`` and
``model.device``, and ``predict(texts)``.

The layers around the backbone (ITHP, ``expand``, the fusion LayerNorm, the pooler, the classifier)
are initialised as transformers initialises layers a checkpoint does not hold, as the authors'
``DebertaV2PreTrainedModel`` did: Linear weights from normal(0, ``initializer_range``) with zero
biases, LayerNorm weight 1 and bias 0. A given backbone keeps its weights.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, DebertaV2Model, PreTrainedModel

from .checks import AUTO, BACKEND_CHOICES, check_choice
from .deberta_config import ITHPDebertaConfig
from .files import follow_umask
from .model import ITHP as FastITHP
from .reference.deberta import ITHPDeberta as ReferenceITHPDeberta
from .reference.deberta import load_backbone
from .reference.ithp import ITHP as ReferenceITHP


def ithp_class(backend: str) -> Callable:
    """What builds ITHP for ``config.backend``: the reference class for ``"reference"``, else the fast
    class (with that backend unless ``"auto"``)."""
    check_choice(backend, BACKEND_CHOICES, "backend")
    if backend == "reference":
        return ReferenceITHP
    return FastITHP if backend == AUTO else functools.partial(FastITHP, backend=backend)


HEAD_OPTIONS = ("num_labels", "beta_shift", "dropout_prob", "pass_attention_mask", "mask_ithp_padding",
                "modality_order", "max_seq_length")
"""Keyword arguments of the reference constructor that are settings of the config."""


def _config_setting(name: str) -> property:
    """An attribute the reference computation reads, kept in ``self.config`` (so saving keeps it)."""

    def get(self) -> Any:
        return getattr(self.config, name)

    def set(self, value: Any) -> None:
        setattr(self.config, name, value)

    return property(get, set, doc=f"``config.{name}``")


class ITHPDeberta(ReferenceITHPDeberta, PreTrainedModel):
    """ITHP-DeBERTa for sentiment regression, as a Hugging Face model.

    Built from an [`ithp_fast.ITHPDebertaConfig`][] (``ITHPDeberta(config)``, what
    ``from_pretrained`` does), or as the reference is: ``ITHPDeberta(backbone, ithp_args, *,
    num_labels=1, beta_shift=1.0, dropout_prob=0.5, pass_attention_mask=True, mask_ithp_padding=False,
    modality_order=("acoustic", "visual"), max_seq_length=50, ithp_cls=ithp_fast.reference.ITHP,
    **ithp_kwargs)`` with ``backbone`` a ``DebertaV2Config``, a local directory or a built
    ``DebertaV2Model`` (whose weights are kept).

    Args:
        config: the model's settings (or, in the second form, the backbone).
        ithp_args: the second form's ITHP config.
        tokenizer: what ``predict`` tokenises with and ``save_pretrained`` writes beside the weights
            (``from_pretrained`` loads the one saved in its directory).
        backbone: a built ``DebertaV2Model`` to use instead of a new one from ``config.backbone``.
        ithp_cls: the ITHP class (default: ``ithp_class`` of ``config.backend``).
        ithp_kwargs: more arguments of the ITHP class (``backend=`` of the fast one).
    """

    config_class = ITHPDebertaConfig
    base_model_prefix = "dberta"
    main_input_name = "input_ids"

    pass_attention_mask = _config_setting("pass_attention_mask")
    mask_ithp_padding = _config_setting("mask_ithp_padding")
    max_seq_length = _config_setting("max_seq_length")

    def __init__(self, config: Union[ITHPDebertaConfig, Any], ithp_args: Any = None, *, tokenizer: Any = None,
                 backbone: Optional[nn.Module] = None, ithp_cls: Optional[type] = None, **ithp_kwargs: Any) -> None:
        if not isinstance(config, ITHPDebertaConfig):
            config, backbone, ithp_cls, ithp_kwargs = _config_from_parts(config, ithp_args, ithp_cls, ithp_kwargs)
        elif ithp_args is not None:
            raise TypeError("ithp_args: given with an ITHPDebertaConfig, which holds ITHP's settings (config.ithp)")
        PreTrainedModel.__init__(self, config)
        backbone = DebertaV2Model(config.backbone) if backbone is None else backbone
        ithp_cls = ithp_class(config.backend) if ithp_cls is None else ithp_cls
        ithp = ithp_cls(config.ithp_config, eval_sampling=config.eval_sampling, **ithp_kwargs)
        self.build(backbone, ithp, config.num_labels, config.beta_shift, config.dropout_prob, config.modality_order)
        self.tokenizer = tokenizer
        self.post_init()  # initialises what transformers has not: a backbone built or loaded by it is marked done

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *args: Any,
                        **kwargs: Any) -> "ITHPDeberta":
        """``PreTrainedModel.from_pretrained``, with the tokenizer saved in a local directory attached."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        path = os.fspath(pretrained_model_name_or_path)
        if model.tokenizer is None and os.path.isdir(path):
            model.tokenizer = load_saved_tokenizer(path)
        return model

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained`` (``config.json``, ``model.safetensors``), the tokenizer's
        files beside them (its ``tokenizer.json`` cutting at ``max_seq_length`` tokens and padding a batch to
        its longest text), every file readable as the umask allows (safetensors alone writes 0600)."""
        from .serving.export import write_tokenizer

        super().save_pretrained(save_directory, *args, **kwargs)
        if self.tokenizer is not None:
            write_tokenizer(self.tokenizer, save_directory, self.max_seq_length, self.config.backbone.pad_token_id or 0)
        weights = [os.path.join(save_directory, f) for f in os.listdir(save_directory) if f.endswith(".safetensors")]
        follow_umask(*weights)

    def predict(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> list:
        """The score of each text: tokenised with ``self.tokenizer``, cut to ``max_seq_length`` tokens,
        batched ``batch_size`` at a time and padded to each batch's longest text, on the model's
        device, with ITHP's posterior mean. One float per text (a list of ``num_labels`` floats each
        when there are several outputs). Words outside a word-level vocabulary are counted and
        reported in one warning; an empty text is an error.
        See [`ithp_fast.serving.text.TextScorer`][] for the cut texts and the counts."""
        from .serving.text import TextScorer

        return TextScorer(self, batch_size=batch_size).score(texts, progress=progress).scores


def _config_from_parts(backbone: Any, ithp_args: Any, ithp_cls: Optional[type],
                       options: dict) -> tuple[ITHPDebertaConfig, nn.Module, type, dict]:
    """The second constructor form: a config from a backbone, ITHP's args and the reference's keywords."""
    head = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
    eval_sampling = options.pop("eval_sampling", "sample")
    ithp_cls = ReferenceITHP if ithp_cls is None else ithp_cls
    module = load_backbone(backbone)
    config = ITHPDebertaConfig(
        backbone=module.config,
        ithp=ithp_args,
        eval_sampling=eval_sampling,
        backend=(options.get("backend") or AUTO) if issubclass(ithp_cls, FastITHP) else "reference",
        backbone_path=os.fspath(backbone) if isinstance(backbone, (str, os.PathLike)) else None,
        **head,
    )
    return config, module, ithp_cls, options


def load_saved_tokenizer(directory: str):
    """The tokenizer saved in ``directory`` (Hugging Face's files), or None when it holds none."""
    if not any(os.path.isfile(os.path.join(directory, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


for _auto in (AutoModel, AutoModelForSequenceClassification):
    _auto.register(ITHPDebertaConfig, ITHPDeberta, exist_ok=True)

"""A saved checkpoint as a model ready for inference."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Union

import torch

from ..checks import backend_argument, renamed_settings
from ..reference.ithp import EVAL_SAMPLING
from . import checkpoints as ckpt
from .build import build_model, model_settings, text_tokenizer

if TYPE_CHECKING:
    from ..deberta import ITHPDeberta


def load_checkpoint_model(
    directory: Union[str, os.PathLike],
    *,
    backend: Optional[str] = None,
    device: Union[str, torch.device] = "cpu",
    eval_sampling: Optional[str] = None,
) -> tuple[ITHPDeberta, dict]:
    """The model of a checkpoint directory, in eval mode on ``device`` with its tokenizer attached, and the
    checkpoint's settings (``"model"``: the model's config as a dict, whatever version wrote it).

    ``backend`` and ``eval_sampling`` default to the training run's (a checkpoint written before
    ``backend`` names it ``impl``).
    """
    directory = os.fspath(directory)
    backend = backend_argument(backend)
    if eval_sampling is not None and eval_sampling not in EVAL_SAMPLING:
        raise ValueError(f"eval_sampling: expected one of {EVAL_SAMPLING}, got {eval_sampling!r}")
    config = ckpt.load_config(directory)
    settings = model_settings(config)
    # by default the training run's eval_sampling (what ``evaluate`` reproduces), else the saved model's
    settings.eval_sampling = eval_sampling or config.get("run", {}).get("eval_sampling") or settings.eval_sampling
    model = build_model(settings, backend or renamed_settings(config, directory).get("backend"))
    ckpt.load_weights(model, directory)
    model.tokenizer = text_tokenizer(config, directory, settings.max_seq_length)
    return model.to(device).eval(), {**config, "model": model.config.to_dict()}


def load_checkpoint(
    path: Union[str, os.PathLike],
    *,
    device: Union[str, torch.device] = "cpu",
    eval_sampling: str = "mean",
    backend: Optional[str] = None,
    impl: Optional[str] = None,
) -> ITHPDeberta:
    """The ``ITHPDeberta`` saved in a checkpoint directory, in eval mode on ``device``, ready for inference
    (``model.predict(texts)``: its tokenizer is attached).

    Args:
        path: a checkpoint directory written by ``ithp-fast train`` (``.../seed-N/checkpoint-last``), by
            ``ithp-fast package`` or by ``save_pretrained``; checkpoints of earlier versions load too.
        device: where the model goes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
        eval_sampling: ``"mean"`` (default): the latent is the posterior mean, so the same input
            always gives the same logits. ``"sample"``: the latent is drawn as in training, which
            is how the released evaluation scored its models (reproducing it needs this).
        backend: what computes ITHP, ``"auto"``, ``"triton"``, ``"torch"`` or ``"reference"``
            (default: the training run's). ``impl`` (``"fast"`` = ``"auto"``, ``"reference"``) is
            its old name.

    Every file is checked against the SHA-256 recorded when it was saved; a damaged file, or
    weights whose shapes do not fit the saved config, stop with one line naming the problem.
    """
    model, _ = load_checkpoint_model(path, backend=backend_argument(backend, impl), device=device,
                                     eval_sampling=eval_sampling)
    return model

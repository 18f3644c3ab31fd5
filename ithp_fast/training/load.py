"""A saved checkpoint as a model ready for inference."""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

from ..reference.deberta import ITHPDeberta
from ..reference.ithp import EVAL_SAMPLING
from . import checkpoints as ckpt
from .build import build_model
from .config import backend_argument, renamed_settings


def load_checkpoint_model(
    directory: Union[str, os.PathLike],
    *,
    backend: Optional[str] = None,
    device: Union[str, torch.device] = "cpu",
    eval_sampling: Optional[str] = None,
) -> tuple[ITHPDeberta, dict]:
    """The model of a checkpoint directory and its ``config.json``, in eval mode on ``device``.

    ``backend`` and ``eval_sampling`` default to the training run's (a checkpoint written before
    ``backend`` names it ``impl``).
    """
    directory = os.fspath(directory)
    backend = backend_argument(backend)
    if eval_sampling is not None and eval_sampling not in EVAL_SAMPLING:
        raise ValueError(f"eval_sampling: expected one of {EVAL_SAMPLING}, got {eval_sampling!r}")
    config = ckpt.load_config(directory)
    model_config = dict(config["model"])
    if eval_sampling is not None:
        model_config["eval_sampling"] = eval_sampling
    model = build_model(model_config, backend or renamed_settings(config, directory).get("backend", "auto"))
    ckpt.load_weights(model, directory)
    return model.to(device).eval(), {**config, "model": model_config}


def load_checkpoint(
    path: Union[str, os.PathLike],
    *,
    device: Union[str, torch.device] = "cpu",
    eval_sampling: str = "mean",
    backend: Optional[str] = None,
    impl: Optional[str] = None,
) -> ITHPDeberta:
    """The ``ITHPDeberta`` saved in a checkpoint directory, in eval mode on ``device``, ready for inference.

    Args:
        path: a checkpoint directory written by ``ithp-fast train`` (``.../seed-N/checkpoint-last``).
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

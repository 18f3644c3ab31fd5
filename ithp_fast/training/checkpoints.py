"""Checkpoints: weights in safetensors, the full configuration in JSON beside them, and the
optimiser / scheduler / progress state needed to resume.

A checkpoint directory holds::

    model.safetensors       the model's state_dict (backbone included)
    config.json             {"format", "model": {...}, "run": {...}, "data": {...}, "tokenizer": {...}}
    vocab.json | tokenizer files    what turns words into token ids
    optimizer.safetensors   optimiser tensors (resumable checkpoints only)
    trainer_state.json      optimiser hyper-parameters, scheduler state, progress, history
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any, Callable, Optional

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

FORMAT = "ithp_fast-checkpoint-1"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: NaN / inf become None, tuples lists, tensors numbers or lists."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(to_jsonable(obj), f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def save_checkpoint(
    directory: str,
    model: nn.Module,
    config: dict,
    *,
    save_tokenizer: Optional[Callable[[str], Any]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    state: Optional[dict] = None,
) -> None:
    """Write a checkpoint; the directory is replaced as a whole so a crash never leaves half of one."""
    tmp = directory.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_model(model, os.path.join(tmp, MODEL_FILE))
    write_json(os.path.join(tmp, CONFIG_FILE), {"format": FORMAT, **config})
    if save_tokenizer is not None:
        save_tokenizer(tmp)
    if optimizer is not None:
        tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, os.path.join(tmp, OPTIMIZER_FILE))
        write_json(
            os.path.join(tmp, STATE_FILE),
            {"optimizer": opt_meta, "scheduler": scheduler.state_dict() if scheduler is not None else None, **(state or {})},
        )
    old = directory.rstrip("/") + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_config(directory: str) -> dict:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint: {path} not found; expected a directory written by `ithp-fast train`")
    config = read_json(path)
    if config.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} has format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_weights(model: nn.Module, directory: str) -> None:
    """Load ``model.safetensors`` into ``model`` (strict: every key must match)."""
    missing, unexpected = load_model(model, os.path.join(directory, MODEL_FILE), strict=False)
    if missing or unexpected:
        raise KeyError(f"checkpoint {directory}: weights do not match the model (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")


def has_training_state(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, STATE_FILE)) and os.path.isfile(os.path.join(directory, OPTIMIZER_FILE))


def load_training_state(directory: str, optimizer: torch.optim.Optimizer, scheduler: Optional[Any] = None) -> dict:
    """Restore optimiser and scheduler in place; returns the rest of the saved state."""
    state = read_json(os.path.join(directory, STATE_FILE))
    tensors = load_file(os.path.join(directory, OPTIMIZER_FILE))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state.pop("optimizer")))
    sched = state.pop("scheduler")
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    return state


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, values in sd["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}

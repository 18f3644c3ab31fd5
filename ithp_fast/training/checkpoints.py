"""Checkpoints: weights in safetensors, the full configuration in JSON beside them, the optimiser /
scheduler / progress state needed to resume, and a manifest with the SHA-256 of every file.

A checkpoint directory is a Hugging Face model directory (``ITHPDeberta.from_pretrained``,
``AutoModelForSequenceClassification``, ``pipeline``) plus what training needs::

    config.json             the model's ITHPDebertaConfig (model_type "ithp_deberta"), posterior mean
    model.safetensors       the model's state_dict (backbone included)
    tokenizer.json, tokenizer_config.json, ...   the tokenizer, in Hugging Face's format
    training.json           {"format", "run": {...}, "data": {...}, "tokenizer": {...}, "backend", "world_size"}:
                            how the model was trained (the run's settings, eval_sampling included)
    optimizer.safetensors   optimiser tensors (resumable checkpoints only)
    trainer_state.json      optimiser hyper-parameters, scheduler state, progress, history
    manifest.json           size and SHA-256 of each file above; written last

Checkpoints of earlier versions keep loading: format 2 held everything in ``config.json`` (``{"format",
"model", "run", "data", "tokenizer", ...}``) and the vocabulary in ``vocab.json``; format 1 had no
manifest. Every file is written with the mode the umask gives (0644 under the usual 022).

Saving ``DIR`` is crash-safe: everything is written to ``DIR.tmp`` (files flushed to disk, the
manifest last), then ``DIR`` is renamed ``DIR.old``, ``DIR.tmp`` renamed ``DIR`` and ``DIR.old``
removed. Whatever step a crash interrupts, :func:`recover` finds the newest complete copy
(``DIR.tmp`` is newer than ``DIR``, which is newer than ``DIR.old``), puts it at ``DIR`` and
removes only copies that are incomplete or older than it. Every file is checked against the
manifest when it is read: a changed byte stops with one line naming the file. A checkpoint without a
manifest cannot be checked: reading it says so (:class:`UnverifiedCheckpointWarning`), and
``--resume`` refuses it unless ``--resume-unverified`` is given.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import warnings
from typing import Any, Callable, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..files import follow_umask

FORMAT = "ithp_fast-checkpoint-3"  # 3: a Hugging Face config.json, the run in training.json
EARLIER_FORMAT = "ithp_fast-checkpoint-2"  # everything in config.json, with manifest.json
LEGACY_FORMAT = "ithp_fast-checkpoint-1"  # no manifest
MODEL_TYPE = "ithp_deberta"
CONFIG_FILE = "config.json"
RUN_FILE = "training.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint's files are missing, damaged or not what they claim to be (one line, naming the file)."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint has no manifest.json, so its files cannot be checked against the SHA-256 they were saved with."""


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


def sync_to_disk(path: str) -> None:
    """Flush a file (or a directory's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str, obj: Any) -> None:
    """Write JSON through a temporary file, so ``path`` is either the old or the new content."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(to_jsonable(obj), f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    """The JSON in ``path``; a damaged or foreign file is one :class:`CheckpointError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON file ({exc})") from None
    except OSError as exc:  # a directory, no permission to read
        raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {exc.strerror})") from None


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """The tensors in ``path``; a truncated or foreign file is one :class:`CheckpointError` naming it."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError for every malformed file
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str) -> None:
    """Record the size and SHA-256 of every file in ``directory`` (sub-directories included) but a manifest it
    holds already, which the new one replaces."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel == MANIFEST_FILE:
                continue
            sync_to_disk(path)
            files[rel] = {"bytes": os.path.getsize(path), "sha256": sha256_of(path)}
    write_json(os.path.join(directory, MANIFEST_FILE), {"format": FORMAT, "files": files})
    sync_to_disk(directory)


SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def read_manifest(directory: str) -> dict[str, dict]:
    """The files a checkpoint's manifest lists, each ``{"bytes", "sha256"}``, checked for shape: every name a
    plain path inside ``directory`` (nothing outside it is ever read or hashed). Anything else is one
    :class:`CheckpointError` naming the manifest."""
    path = os.path.join(directory, MANIFEST_FILE)
    manifest = read_json(path)

    def refuse(detail: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a checkpoint manifest ({detail})")

    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise refuse('expected {"format": ..., "files": {name: {"bytes", "sha256"}}}')
    if manifest.get("format") not in (FORMAT, EARLIER_FORMAT):
        raise refuse(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    files = manifest["files"]
    for name, entry in files.items():
        if not inside(directory, name):
            raise refuse(f"it lists {name!r}, which is not a file inside the checkpoint")
        if not (
            isinstance(entry, dict)
            and type(entry.get("bytes")) is int
            and entry["bytes"] >= 0
            and isinstance(entry.get("sha256"), str)
            and SHA256_HEX.fullmatch(entry["sha256"])
        ):
            found = repr(entry) if len(repr(entry)) <= 80 else repr(entry)[:77] + "..."
            raise refuse(f"the entry of {name!r} is {found}, expected {{'bytes': size, 'sha256': 64 hex digits}}")
    for name in (CONFIG_FILE, MODEL_FILE):
        if name not in files:
            raise refuse(f"it does not list {name}")
    return files


def inside(directory: str, name: str) -> bool:
    """Whether ``name`` is a relative path that stays inside ``directory`` (after symbolic links too)."""
    if name in ("", os.curdir) or os.path.isabs(name) or os.path.normpath(name) != name:
        return False
    if name.split(os.sep)[0] == os.pardir:
        return False
    root = os.path.realpath(directory)
    return os.path.commonpath([root, os.path.realpath(os.path.join(directory, name))]) == root


def unverified_reason(directory: str) -> Optional[str]:
    """Why the files of ``directory`` cannot be checked (None when it has a manifest to check them against)."""
    if os.path.lexists(os.path.join(directory, MANIFEST_FILE)):
        return None
    if written_before_checksums(directory):
        why = f"it was written by an earlier version, before checksums were kept (no {MANIFEST_FILE})"
    else:
        why = f"its {MANIFEST_FILE} is missing"
    return f"{directory}: unverified checkpoint: {why}, so its files cannot be checked against what was saved"


def checkpoint_problem(directory: str) -> Optional[str]:
    """Why ``directory`` is not a complete, unchanged checkpoint (None when it is)."""
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.lexists(manifest_path):
        return (
            f"{directory}: no {MANIFEST_FILE} (the save did not finish, or it was written before checksums were kept)"
        )
    try:
        files = read_manifest(directory)
    except CheckpointError as exc:
        return str(exc)
    for name, entry in files.items():
        problem = file_problem(directory, name, entry)
        if problem:
            return problem
    return None


def file_problem(directory: str, name: str, entry: dict) -> Optional[str]:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        return f"{path}: missing (listed in {MANIFEST_FILE})"
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        return f"{path}: {size} bytes where {entry['bytes']} were saved (the file was truncated or replaced)"
    if sha256_of(path) != entry["sha256"]:
        return (
            f"{path}: its SHA-256 differs from the one saved in {MANIFEST_FILE} (the file changed after it was saved)"
        )
    return None


def verify_file(directory: str, name: str) -> str:
    """The path of ``name`` in a checkpoint, checked against the manifest when there is one."""
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint: {path} not found; expected a directory written by `ithp-fast train`")
    if unverified_reason(directory) is None:
        entry = read_manifest(directory).get(name)
        if entry is None:
            raise CheckpointError(f"{path}: not listed in {os.path.join(directory, MANIFEST_FILE)}")
        problem = file_problem(directory, name, entry)
        if problem:
            raise CheckpointError(problem)
    return path


def verify_tokenizer_files(directory: str) -> None:
    """Check the tokenizer files of a checkpoint (every listed file but weights, config and training state)."""
    if unverified_reason(directory) is not None:
        return
    own = {MODEL_FILE, CONFIG_FILE, RUN_FILE, OPTIMIZER_FILE, STATE_FILE}
    for name, entry in read_manifest(directory).items():
        problem = None if name in own else file_problem(directory, name, entry)
        if problem:
            raise CheckpointError(problem)


def sibling(directory: str, suffix: str) -> str:
    return directory.rstrip("/" + os.sep) + suffix


def written_before_checksums(directory: str) -> bool:
    """A copy saved by an earlier version (format 1): no manifest, so it cannot be checked."""
    if os.path.isfile(os.path.join(directory, MANIFEST_FILE)):
        return False
    try:
        return read_json(os.path.join(directory, CONFIG_FILE)).get("format") == LEGACY_FORMAT
    except (OSError, CheckpointError, AttributeError):
        return False


def recover(directory: str) -> Optional[str]:
    """Finish or undo an interrupted save of ``directory``; returns it if a complete checkpoint is there.

    Copies: ``DIR.tmp`` (newest), ``DIR``, ``DIR.old`` (oldest). The newest complete one ends up at
    ``DIR``; an unfinished ``DIR.tmp`` and copies older than the kept one are removed. A damaged
    ``DIR`` that no newer copy replaces, a file where a copy's directory should be, or left-over
    copies that cannot be checked (saved by an earlier version, without a manifest), stop with a
    :class:`CheckpointError`: nothing is guessed. A lone ``DIR`` without a manifest is returned as it is
    (:func:`unverified_reason` says why it cannot be checked; its readers decide).
    """
    tmp, old = sibling(directory, ".tmp"), sibling(directory, ".old")
    for path in (tmp, directory, old):
        if os.path.lexists(path) and not os.path.isdir(path):
            raise CheckpointError(
                f"{path}: a file where a checkpoint directory was expected; move it away and run again"
            )
    present = [p for p in (tmp, directory, old) if os.path.isdir(p)]
    if present == [directory] and unverified_reason(directory) is not None:
        return directory
    if any(written_before_checksums(p) for p in present):
        raise CheckpointError(
            f"{', '.join(present)}: left by an interrupted save of an earlier version, without "
            f"checksums; keep the copy to continue from as {directory} and remove the others"
        )
    problems = {p: checkpoint_problem(p) for p in present}
    complete = [p for p in present if problems[p] is None]
    newest = complete[0] if complete else None
    damaged = [p for p in (directory, old) if p in problems and problems[p] is not None]
    if newest is None and damaged or newest == old and directory in problems:
        raise CheckpointError(problems[damaged[0]])
    if newest is None:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)  # a save that never finished
        return None
    if newest == tmp and os.path.isdir(directory):
        if os.path.isdir(old):
            shutil.rmtree(old)
        os.replace(directory, old)
    if newest != tmp and os.path.isdir(tmp):
        shutil.rmtree(tmp)
    if newest != directory:
        os.replace(newest, directory)
    if os.path.isdir(old):
        shutil.rmtree(old)
    return directory


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
    """Write a checkpoint; whatever step a crash interrupts, :func:`recover` restores a complete one.

    ``config["model"]`` (the model's Hugging Face config) becomes ``config.json``, set to the posterior
    mean (what a served model computes; the run's own ``eval_sampling`` stays in ``config["run"]``),
    and the rest of ``config`` ``training.json``.
    """
    recover(directory)
    tmp, old = sibling(directory, ".tmp"), sibling(directory, ".old")
    os.makedirs(tmp)
    if "model" in config:
        write_json(os.path.join(tmp, CONFIG_FILE), {**config["model"], "eval_sampling": "mean"})
    write_json(os.path.join(tmp, RUN_FILE), {"format": FORMAT, **{k: v for k, v in config.items() if k != "model"}})
    weights = os.path.join(tmp, MODEL_FILE)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, weights, metadata={"format": "pt"})  # "pt": what transformers' from_pretrained expects
    follow_umask(weights)
    if save_tokenizer is not None:
        save_tokenizer(tmp)
    if optimizer is not None:
        tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, os.path.join(tmp, OPTIMIZER_FILE))
        follow_umask(os.path.join(tmp, OPTIMIZER_FILE))
        sched = scheduler.state_dict() if scheduler is not None else None
        write_json(os.path.join(tmp, STATE_FILE), {"optimizer": opt_meta, "scheduler": sched, **(state or {})})
    write_manifest(tmp)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    sync_to_disk(os.path.dirname(os.path.abspath(directory)))
    if os.path.exists(old):
        shutil.rmtree(old)


def load_config(directory: str) -> dict:
    """A checkpoint's settings (checked against its manifest) as ``{"model": <config.json>, "run", "data",
    "tokenizer", "backend" (``"impl"`` before), "world_size", "format"}``: this version's ``config.json``
    and ``training.json`` together (a directory written by ``save_pretrained`` has no ``training.json``:
    then only ``"model"``), or an earlier version's ``config.json``, which held all of it (its ``"model"``
    in that version's form). Without a manifest, an :class:`UnverifiedCheckpointWarning` says that
    nothing in it can be checked."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"checkpoint: {directory} is not a directory; expected one written by `ithp-fast train`"
        )
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        inside = sorted(os.path.relpath(os.path.dirname(p), directory) for p in _configs_below(directory))
        hint = f"; checkpoints inside it: {', '.join(inside)}" if inside else ""
        raise FileNotFoundError(f"checkpoint: {directory} has no {CONFIG_FILE}, so it is not a checkpoint{hint}")
    config = read_json(verify_file(directory, CONFIG_FILE))
    if isinstance(config, dict) and "model_type" in config:
        if config["model_type"] != MODEL_TYPE:
            raise CheckpointError(f"{path}: model_type {config['model_type']!r}, expected {MODEL_TYPE!r}")
        run_path = os.path.join(directory, RUN_FILE)
        run = read_json(verify_file(directory, RUN_FILE)) if os.path.isfile(run_path) else {"format": FORMAT}
        if not isinstance(run, dict) or run.get("format") != FORMAT:
            found = run.get("format") if isinstance(run, dict) else type(run).__name__
            raise CheckpointError(f"{run_path}: format {found!r}, expected {FORMAT!r}")
        config = {**run, "model": config}
    elif not isinstance(config, dict) or config.get("format") not in (EARLIER_FORMAT, LEGACY_FORMAT):
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: format {found!r}, expected {FORMAT!r} (a Hugging Face config.json)")
    unverified = unverified_reason(directory)
    if unverified:
        warnings.warn(unverified, UnverifiedCheckpointWarning)  # attributed here: one line however often read
    return config


def _configs_below(directory: str, depth: int = 2) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory):
        if os.path.relpath(root, directory).count(os.sep) >= depth:
            dirs.clear()
        if CONFIG_FILE in files and root != directory and not root.endswith((".tmp", ".old")):
            found.append(os.path.join(root, CONFIG_FILE))
    return found


def load_weights(model: nn.Module, directory: str) -> None:
    """Load ``model.safetensors`` into ``model`` through ``load_state_dict`` (strict; the model's own
    state-dict hooks apply). A shape mismatch names the first mismatching key and both shapes."""
    tensors = read_safetensors(verify_file(directory, MODEL_FILE))
    for name, wanted in model.state_dict().items():
        if name in tensors and tensors[name].shape != wanted.shape:
            raise CheckpointError(
                f"{directory}: {name} has shape {tuple(tensors[name].shape)} in the checkpoint but "
                f"{tuple(wanted.shape)} in the model"
            )
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {directory}: weights do not match the model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )


def check_training_state(directory: str) -> None:
    """A clear error when a checkpoint lacks what --resume needs."""
    for name in (STATE_FILE, OPTIMIZER_FILE):
        if not os.path.isfile(os.path.join(directory, name)):
            raise CheckpointError(
                f"{os.path.join(directory, name)}: missing, so {directory} cannot be resumed "
                f"(restore the file, or start again without --resume in another --output-dir)"
            )


def load_training_state(directory: str, optimizer: torch.optim.Optimizer, scheduler: Optional[Any] = None) -> dict:
    """Restore optimiser and scheduler in place; returns the rest of the saved state."""
    check_training_state(directory)
    state = read_json(verify_file(directory, STATE_FILE))
    tensors = read_safetensors(verify_file(directory, OPTIMIZER_FILE))
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

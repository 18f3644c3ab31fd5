"""The Python API of training: ``ithp_fast.train`` and ``ithp_fast.evaluate``.

import ithp_fast

summary = ithp_fast.train({"epochs": 10, "lr": 1e-3}, output_dir="runs/mine")   # the synthetic set
summary = ithp_fast.train("train_config.json", data=my_splits, callbacks=[print_epoch])
report = ithp_fast.evaluate("runs/mine/seed-1/checkpoint-last", data="data/mosi.pkl")
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Union

from ..data import SentimentData, SentimentSplit
from .config import TrainConfig, known_settings, recipe_settings
from .evaluate import evaluate_checkpoint
from .loop import EpochEnd, run_training

ConfigSource = Union[TrainConfig, Mapping, str, os.PathLike, None]
# What ``data=`` takes: a pickle path; loaded data; {"train", "valid", "test"} SentimentSplit objects; or the
# object a pickle holds, in either layout (word-level train/dev/test, or MMSA's train/valid/test arrays).
DataSource = Union[str, os.PathLike, SentimentData, Mapping, None]


def read_config_file(path: Union[str, os.PathLike]) -> dict:
    """The settings in a JSON or YAML file; keys are flag names, with ``-`` or ``_`` (``lr``, ``max-seq-length``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"--config: {path} is a directory; expected a JSON or YAML file of settings")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith((".yaml", ".yml")):
                import yaml

                values = yaml.safe_load(f)
            else:
                values = json.load(f)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError
        raise ValueError(
            f"--config: {path} is not a readable {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'} "
            f"file ({str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(values, dict):
        raise ValueError(f"--config: {path} holds a {type(values).__name__}, expected a mapping of settings")
    return normalise_keys(values, f"--config: {path}")


def normalise_keys(values: Mapping, where: str) -> dict:
    """Keys as TrainConfig's field names (an old name, such as ``impl``, as today's); a clear error
    listing unknown ones."""
    return known_settings({str(k).lstrip("-").replace("-", "_"): v for k, v in values.items()}, TrainConfig, where,
                          "train")


def make_config(config: ConfigSource = None, **settings: Any) -> TrainConfig:
    """A TrainConfig from a TrainConfig, a mapping or a JSON / YAML file, with ``settings`` overriding it.

    A data pickle named in a file is refused unless ``settings`` name the data too: unpickling runs code
    stored in the pickle, so one is read only from a path the caller gives (``--data``, ``data=``)."""
    from transformers import HfArgumentParser

    if isinstance(config, TrainConfig):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = normalise_keys(config, "config")
    elif config is not None:
        base = read_config_file(config)
        if base.get("data") is not None and "data" not in settings:
            raise ValueError(
                f"--config: {os.fspath(config)} names the data pickle {base['data']!r}, and unpickling runs code "
                f"stored in the file, so a pickle is read only from a path given on the command line or in the "
                f"call: add --data {base['data']} (ithp_fast.train(..., data={base['data']!r})) if you trust it"
            )
    else:
        base = {}
    merged = {**base, **normalise_keys(settings, "settings")}
    merged = {**recipe_settings(merged.get("recipe")), **merged}
    (cfg,) = HfArgumentParser(TrainConfig).parse_dict(merged)
    return cfg


def as_sentiment_data(data: DataSource) -> Union[SentimentData, str, None]:
    """``data`` as the loop takes it: a path (read later, with the run's tokenizer), loaded data, or None."""
    if data is None or isinstance(data, (str, os.PathLike, SentimentData)):
        return os.fspath(data) if isinstance(data, os.PathLike) else data
    if isinstance(data, Mapping) and data and all(isinstance(v, SentimentSplit) for v in data.values()):
        splits = {"valid" if k == "dev" else k: v for k, v in data.items()}
        if set(splits) != {"train", "valid", "test"}:
            raise ValueError(f"data: expected the splits train, valid and test, got {sorted(data)}")
        return SentimentData(splits, "splits", "in-memory splits")
    if isinstance(data, Mapping):
        return data  # a pickle's object: parsed by the loop with the run's tokenizer
    raise TypeError(
        f"data: expected a pickle path, SentimentData, a dict of SentimentSplit, or a pickle's dict; "
        f"got {type(data).__name__}"
    )


def train(
    config: ConfigSource = None,
    /,
    *,
    data: DataSource = None,
    callbacks: Sequence = (),
    **settings: Any,
) -> dict:
    """Train ITHP-DeBERTa; returns the summary over seeds (what ``summary.json`` holds).

    Args:
        config: a [`TrainConfig`][ithp_fast.TrainConfig], a dict of settings, or a JSON / YAML file such as a run's
            ``train_config.json``; keys are the flag names of ``ithp-fast train`` (``-`` or ``_``). A data
            pickle a file names is read only when ``data`` names it too (unpickling runs code).
        data: a pickle path (either layout), a [`SentimentData`][ithp_fast.data.SentimentData], a dict of
            ``train`` / ``valid`` / ``test`` [`SentimentSplit`][ithp_fast.data.SentimentSplit], or the dict a
            pickle holds (word-level train/dev/test, or MMSA's arrays). Default: the ``data`` path of a
            ``config`` given as a dict or [`TrainConfig`][ithp_fast.TrainConfig], else the built-in synthetic set.
        callbacks: functions called with an [`EpochEnd`][ithp_fast.training.loop.EpochEnd] after each
            epoch (seed, epoch, its record of losses and metrics, the model, the seed directory);
            one returning True ends that seed's training there, as ``--early-stop`` does.
        settings: settings that override ``config`` (``epochs=5``, ``output_dir="runs/x"``).
    """
    loaded = as_sentiment_data(data)
    if isinstance(loaded, str):  # a pickle path: named here, so it may be read
        cfg, loaded = make_config(config, **settings, data=loaded), None
    elif loaded is not None:  # data in memory: no path is read
        cfg = make_config(config, **settings, data=None)
    else:
        cfg = make_config(config, **settings)
    return run_training(cfg, data=loaded, callbacks=tuple(callbacks))


def evaluate(checkpoint: Union[str, os.PathLike], data: DataSource = None, **settings: Any) -> dict:
    """Score a checkpoint directory on one split; returns the report (also written to ``output_dir``).

    Args:
        checkpoint: a checkpoint directory written by [`train`][ithp_fast.train] (``runs/NAME/seed-N/checkpoint-last``).
        data: what [`train`][ithp_fast.train] takes (needed unless the checkpoint was trained on the synthetic set).
        settings: the options of ``ithp-fast evaluate``, the fields of
            [`EvalConfig`][ithp_fast.training.eval_config.EvalConfig]: ``split`` (``"test"``), ``protocol``
            (``"authors"``), ``batch_size``, ``backend`` (what computes ITHP; ``impl``, its old name, still
            works) and ``eval_sampling`` (the training run's;
            ``"mean"`` gives the same predictions every time), ``drop_detectors`` (e.g. ``["acoustic"]``:
            removed from every example, the report's ``ib_terms`` show their levels' reconstruction terms
            at 0; the predictions do not use detectors), ``device`` (``"auto"``) and ``output_dir``
            (``eval-<checkpoint name>`` beside the checkpoint).
    """
    return evaluate_checkpoint(os.fspath(checkpoint), as_sentiment_data(data), **settings)


__all__ = ["EpochEnd", "evaluate", "make_config", "read_config_file", "train"]

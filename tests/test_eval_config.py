"""EvalConfig, the settings of scoring a checkpoint: the flags of ``ithp-fast evaluate``, the keywords of
``ithp_fast.evaluate`` and the fields of the dataclass are one set, so an option is added as one field; the
flags keep their names, and a setting out of range or unknown is one line."""

import dataclasses
import json

import pytest
from test_cli_options import subcommands

from ithp_fast.tools.cli import build_parser
from ithp_fast.training import api
from ithp_fast.training import evaluate as evaluate_module
from ithp_fast.training.eval_config import EvalConfig, make_eval_config

FIELDS = {f.name for f in dataclasses.fields(EvalConfig)}
# A value other than the default for each setting.
GIVEN = {
    "checkpoint": "runs/x/seed-1/checkpoint-last",
    "data": "mosi.pkl",
    "split": "valid",
    "protocol": "mmsa",
    "batch_size": 4,
    "backend": "reference",
    "eval_sampling": "mean",
    "drop_detectors": ["acoustic", "visual"],
    "device": "cpu",
    "output_dir": "scores",
}
# The flags as they were written before EvalConfig (--backend: --impl before, which keeps working).
FLAGS = [
    "--checkpoint", "runs/x/seed-1/checkpoint-last", "--data", "mosi.pkl", "--split", "valid", "--protocol", "mmsa",
    "--batch-size", "4", "--backend", "reference", "--eval-sampling", "mean", "--drop-detectors", "acoustic", "visual",
    "--device", "cpu", "--output-dir", "scores",
]  # fmt: skip


def test_the_flags_the_keywords_and_the_fields_are_one_set(monkeypatch):
    assert set(GIVEN) == FIELDS  # GIVEN names every field (a new one is added there too)
    parser = subcommands()["evaluate"]
    flags = {a.dest: a for a in parser._actions if a.dest not in ("help", "impl")}  # impl: --backend before
    assert set(flags) == FIELDS
    assert all(f"--{name.replace('_', '-')}" == flags[name].option_strings[0] for name in FIELDS)
    calls = scored(monkeypatch)
    for name in FIELDS - {"checkpoint", "data"}:
        api.evaluate("ckpt", **{name: GIVEN[name]})
        assert getattr(calls[-1][0], name) == GIVEN[name], name
    api.evaluate(**GIVEN)
    assert calls[-1] == (EvalConfig(**{**GIVEN, "data": None}), "mosi.pkl")  # data: a path, or data in memory


def scored(monkeypatch) -> list:
    """Where ``ithp_fast.evaluate`` records the (EvalConfig, data) it would score a checkpoint with."""
    calls = []

    def record(checkpoint, data, **options):
        calls.append((evaluate_module.settings_of(checkpoint, options), data))

    monkeypatch.setattr(api, "evaluate_checkpoint", record)
    return calls


def test_the_flags_written_before_parse_to_the_same_settings(monkeypatch):
    args = build_parser().parse_args(["evaluate", *FLAGS])
    assert {name: getattr(args, name) for name in FIELDS} == GIVEN
    defaults = build_parser().parse_args(["evaluate", "--checkpoint", "c"])
    assert EvalConfig(**{name: getattr(defaults, name) for name in FIELDS}) == EvalConfig(checkpoint="c")
    calls = scored(monkeypatch)
    assert args.func(args) == 0 and calls == [(EvalConfig(**{**GIVEN, "data": None}), "mosi.pkl")]
    old = build_parser().parse_args(["evaluate", *(a if a != "--backend" else "--impl" for a in FLAGS)])
    assert old.func(old) == 0 and calls[-1] == calls[0]
    api.evaluate("ckpt", impl="fast")
    assert calls[-1][0].backend == "auto"


class Seen(Exception):
    """Raised in place of scoring, with the settings evaluate_checkpoint built."""


def test_evaluate_checkpoint_takes_an_eval_config_or_a_directory_and_keywords(monkeypatch):
    assert make_eval_config(**GIVEN) == EvalConfig(**GIVEN)
    with pytest.raises(TypeError, match="split given beside an EvalConfig"):
        evaluate_module.evaluate_checkpoint(EvalConfig(checkpoint="c"), split="valid")

    def seen(settings):
        raise Seen(settings)

    monkeypatch.setattr(EvalConfig, "validate", seen)
    options = {k: v for k, v in GIVEN.items() if k not in ("checkpoint", "data")}
    with pytest.raises(Seen) as caught:
        evaluate_module.evaluate_checkpoint(GIVEN["checkpoint"], **options)
    assert caught.value.args[0] == EvalConfig(**{**GIVEN, "data": None})


def test_round_trip_through_json():
    settings = EvalConfig(**GIVEN)
    assert EvalConfig(**json.loads(json.dumps(dataclasses.asdict(settings)))) == settings


@pytest.mark.parametrize(
    "change, message",
    [
        ({"split": "dev"}, "--split: expected train, valid or test, got 'dev'"),
        ({"protocol": "mosi"}, r"--protocol: expected one of \('authors', 'mmsa'\), got 'mosi'"),
        ({"batch_size": 0}, "--batch-size: expected a positive number of examples, got 0"),
        ({"batch_size": True}, "--batch-size: expected a positive number of examples, got True"),
    ],
)
def test_a_setting_out_of_range_is_one_line_naming_its_flag(change, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(**{**GIVEN, **change}).validate()
    with pytest.raises(ValueError, match=message):  # before anything is read
        api.evaluate("no/such/checkpoint", **change)


def test_an_unknown_setting_is_one_line_naming_it():
    line = r"^evaluate: unknown settings batch, splits \(see ithp-fast evaluate --help\)$"
    with pytest.raises(ValueError, match=line):
        api.evaluate("ckpt", batch=4, splits="test")

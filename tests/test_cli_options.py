"""The command line as a whole: ``--version``, a description and plain-text help for every sub-command, one
option name per concept (the old names kept as aliases), and ``--recipe released``."""

import json
import re
import subprocess
import sys

import pytest
from helpers import TINY_TRAINING, as_flags

import ithp_fast
from ithp_fast.tools.cli import build_parser, main
from ithp_fast.training.api import make_config

MARKUP = re.compile(r"``|:(func|class|mod|meth|attr|data):`")


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_version():
    out = subprocess.run([sys.executable, "-m", "ithp_fast", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"ithp-fast {ithp_fast.__version__}"


def test_every_sub_command_has_a_description_and_plain_help():
    commands = subcommands()
    assert {"train", "evaluate", "predict", "export", "package", "bench", "profile"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description and len(parser.description.split()) >= 8, name
        text = parser.format_help()
        assert not MARKUP.search(text), (name, MARKUP.search(text).group(0))
    assert not MARKUP.search(build_parser().format_help())


@pytest.mark.parametrize("argv, dest, value", [
    (["bench", "--out", "x"], "output_dir", "x"),
    (["bench", "--output-dir", "x"], "output_dir", "x"),
    (["profile", "--batch", "4"], "batch_size", 4),
    (["profile", "--batch-size", "4"], "batch_size", 4),
    (["export", "--checkpoint", "c", "--format", "onnx", "--output", "m.onnx", "--batch", "4"], "batch_size", 4),
    (["predict", "--checkpoint", "c", "--batch", "4"], "batch_size", 4),
    (["package", "--checkpoint", "c", "--output", "x"], "output_dir", "x"),
])
def test_one_name_per_concept_with_the_old_names_as_aliases(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_the_released_recipe_is_a_preset_beneath_the_settings_given(tmp_path):
    released = make_config(recipe="released")
    assert released.attention_mask is False and released.eval_sampling == "sample" and released.lr == 1e-5
    assert make_config(recipe="released", attention_mask=True).attention_mask is True  # a flag wins
    assert make_config().attention_mask is True  # the default passes the mask
    with pytest.raises(ValueError, match="--recipe: expected one of released, got 'mine'"):
        make_config(recipe="mine")
    out = tmp_path / "run"
    argv = ["train", "--recipe", "released", "--output-dir", str(out), "--synthetic-sizes", "8", "4", "4",
            *as_flags({**TINY_TRAINING, "max_steps": 1, "epochs": 1, "lr": 1e-3})]
    assert main(argv) == 0
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["recipe"] == "released" and saved["attention_mask"] is False and saved["lr"] == 1e-3
    model = ithp_fast.load_checkpoint(out / "seed-1" / "checkpoint-last")
    assert model.pass_attention_mask is False

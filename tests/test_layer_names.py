"""Layers by name: each level's encoder and detector keep the released ``Sequential`` layout (the
state_dict keys ``encoder1.0.weight`` ... of the spec) and name their layers, and the package
reaches them by those names, never by position."""

import pathlib
import re

import torch
from helpers import level_config, small_config
from test_reference import STATE_KEYS

import ithp_fast
from ithp_fast.reference import ITHP as ReferenceITHP

ROOT = pathlib.Path(__file__).resolve().parents[1]
# a layer by position: encoder[3], mlp[0], detector[5], model.encoder2[0], level_modules(k)[0]
BY_POSITION = re.compile(r"(?:\b(?:encoder\d*|mlp|MLP\d*|detector|e\d)|level_modules\([^)]*\))\[\d\]")


def test_layers_by_name_are_the_released_layers():
    for model in (ReferenceITHP(small_config()), ithp_fast.ITHP(level_config(3))):
        for k in range(model.config.levels):
            encoder, detector = model.level_modules(k)
            assert (encoder, detector) == (getattr(model, f"encoder{k + 1}"), getattr(model, f"MLP{k + 1}"))
            assert isinstance(encoder, torch.nn.Sequential) and isinstance(detector, torch.nn.Sequential)
            assert (encoder.first, encoder.dropout, encoder.last) == (encoder[0], encoder[2], encoder[3])
            assert (detector.first, detector.dropout, detector.last, detector.output_dropout) == \
                (detector[0], detector[2], detector[3], detector[5])
            assert type(detector[4:]) is torch.nn.Sequential and len(detector[4:]) == 2  # a slice, as released
            weight, bias = encoder.mean_layer()
            width = model.config.bottleneck_dims[k]
            assert weight.data_ptr() == encoder.last.weight.data_ptr() and weight.shape[0] == bias.shape[0] == width
    assert list(ReferenceITHP(small_config()).state_dict()) == STATE_KEYS  # the spec's keys, unchanged


def test_the_package_reaches_no_layer_by_position():
    found = []
    for path in sorted([*ROOT.glob("ithp_fast/**/*.py"), *ROOT.glob("reference/*.py"), *ROOT.glob("bench/*.py")]):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if BY_POSITION.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "layers reached by position:\n" + "\n".join(found)

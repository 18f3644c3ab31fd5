"""Every number the README's training section quotes comes from the committed results file it names, and the
command that wrote each file is the one the README gives."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- results: (\S+) -->(.*?)<!-- /results -->", re.S)
# A decimal number; a leading U+2212 minus makes it negative (a hyphen is a range: "2.85-2.97").
NUMBER = re.compile(r"(?<![\w.])(\u2212?)(\d+\.\d+)")


def numbers_in(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers_in(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def training_section():
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("### Training and evaluation") : readme.index("## Benchmarks")]


def test_every_quoted_number_is_in_the_results_file_it_names():
    blocks = BLOCK.findall(training_section())
    assert len(blocks) >= 2, "the training section names fewer results files than expected"
    for path, text in blocks:
        measured = list(numbers_in(json.loads((ROOT / path).read_text())))
        quoted = NUMBER.findall(text)
        assert len(quoted) >= 6, text
        for sign, digits in quoted:
            places = len(digits.split(".")[1])
            value = -float(digits) if sign else float(digits)
            assert any(round(v, places) == value for v in measured), f"{sign}{digits} is not in {path}"


def test_each_results_file_was_written_by_the_command_the_readme_gives():
    section = training_section()
    for path, text in BLOCK.findall(section):
        command = json.loads((ROOT / path).read_text())["command"]
        assert f"`{command}`" in text, f"{path} was written by {command!r}, which its paragraph does not name"
    assert "python examples/train_synthetic.py" in section and "python examples/levels_synthetic.py" in section

"""Every number the README's training section quotes comes from the committed results file it names."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- results: (\S+) -->(.*?)<!-- /results -->", re.S)


def numbers_in(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers_in(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def test_synthetic_run_numbers_come_from_the_results_file():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Training and evaluation") : readme.index("## Benchmarks")]
    blocks = BLOCK.findall(section)
    assert blocks, "the training section names no results file"
    for path, text in blocks:
        measured = list(numbers_in(json.loads((ROOT / path).read_text())))
        quoted = re.findall(r"(?<![\w.])\d+\.\d+", text)
        assert len(quoted) >= 6, text
        for number in quoted:
            places = len(number.split(".")[1])
            assert any(round(v, places) == float(number) for v in measured), f"{number} is not in {path}"
    # the command the README gives is the one that wrote the file
    assert "python examples/train_synthetic.py" in section
    assert all(
        json.loads((ROOT / path).read_text())["command"] == "python examples/train_synthetic.py" for path, _ in blocks
    )

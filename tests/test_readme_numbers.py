"""Every measured figure in the README and on the documentation pages (``docs/``) comes from a committed
results file.

A measured figure stands in a block ``<!-- results: PATH [PATH ...] -->`` ... ``<!-- /results -->``
that names the files it comes from. In a block, every decimal number (a leading U+2212 minus makes
it negative; a hyphen is a range: "2.85-2.97") and every whole number followed by a unit must be,
to the digits shown, a number of one of those files: a number of a JSON / JSON-lines file, or a
number of the text of any other file (the Markdown tables ``ithp-fast bench`` renders). A figure
after ``≤`` or ``≥`` is a target, not a measurement. Outside the blocks no time with decimals
(``12.3 ms``) may stand: a measurement without its source.
"""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- results: ([^>]+?) -->(.*?)<!-- /results -->", re.S)
UNITS = r"(?:ms|µs|us|s|MB|GB|kB|GB/s|%|×)"
TARGET = r"(?<![≤≥] )"  # a figure after ≤ or ≥ is a target, not a measurement
DECIMAL = re.compile(rf"{TARGET}(?<![\w.\-/])(\u2212?)(\d+\.\d+)")
WHOLE_WITH_UNIT = re.compile(rf"{TARGET}(?<![\w.\-/])(\d+)\s?{UNITS}(?!\w)")
TEXT_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
TIME_WITH_DECIMALS = re.compile(rf"{TARGET}(?<![\w.])\d+\.\d+\s?(?:ms|µs)(?!\w)")


def numbers_in(value):
    """Every number of a parsed JSON value."""
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers_in(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def file_numbers(path: Path) -> list:
    text = path.read_text()
    if path.suffix == ".json":
        return list(numbers_in(json.loads(text)))
    if path.suffix == ".jsonl":
        return [v for line in text.splitlines() if line.strip() for v in numbers_in(json.loads(line))]
    return [float(t) for t in TEXT_NUMBER.findall(text)]


def quoted_numbers(text: str):
    """``(shown, value, decimal places)`` of every figure a block quotes."""
    for sign, digits in DECIMAL.findall(text):
        yield sign + digits, (-1 if sign else 1) * float(digits), len(digits.split(".")[1])
    for digits in WHOLE_WITH_UNIT.findall(text):
        yield digits, float(digits), 0


def documents() -> list[Path]:
    """The README and every page of the documentation site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_quoted_figure_is_in_a_results_file_the_block_names():
    counted = 0
    for document in documents():
        where = document.relative_to(ROOT)
        for paths, text in BLOCK.findall(document.read_text()):
            counted += 1
            measured = []
            for name in paths.split():
                assert (ROOT / name).is_file(), f"{where}: {name} is not a committed file"
                measured += file_numbers(ROOT / name)
            quoted = list(quoted_numbers(text))
            assert quoted, f"{where}: a results block for {paths} quotes no number"
            for shown, value, places in quoted:
                assert any(round(v, places) == value for v in measured), f"{where}: {shown} is not in {paths}"
    assert counted >= 10, "the README and docs/ name fewer results blocks than expected"


def test_the_measured_pages_have_their_results_blocks():
    for page in ("README.md", "docs/kernels.md", "docs/training.md", "docs/deployment.md"):
        assert BLOCK.search((ROOT / page).read_text()), f"{page} quotes no results file"


def test_no_measured_time_stands_outside_a_results_block():
    for document in documents():
        text = BLOCK.sub("", document.read_text())
        assert not TIME_WITH_DECIMALS.findall(text), (document.relative_to(ROOT), TIME_WITH_DECIMALS.findall(text))

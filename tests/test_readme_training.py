"""The training page (``docs/training.md``) and the README name the command that wrote each training results file
they quote (the numbers themselves are checked by ``test_readme_numbers.py``)."""

import json
import re

from test_readme_numbers import BLOCK, ROOT

TRAINING_RESULTS = re.compile(r"bench/results/(?:train|levels)-synthetic-\S+\.json")


def training_blocks(page: str) -> list[tuple[str, str]]:
    """``(results file, text)`` of each training run a page quotes (``bench/results/{train,levels}-synthetic-*``)."""
    return [(path, text) for paths, text in BLOCK.findall((ROOT / page).read_text())
            for path in TRAINING_RESULTS.findall(paths)]


def test_each_results_file_was_written_by_the_command_the_page_gives():
    blocks = training_blocks("docs/training.md") + training_blocks("README.md")
    for path, text in blocks:
        command = json.loads((ROOT / path).read_text())["command"]
        assert f"`{command}`" in text, f"{path} was written by {command!r}, which its paragraph does not name"
    commands = " ".join(text for _, text in blocks)
    assert "python examples/train_synthetic.py" in commands and "python examples/levels_synthetic.py" in commands

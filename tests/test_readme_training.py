"""The training page (``docs/training.md``) and the README name the command that wrote each training results file
they quote (the numbers themselves are checked by ``test_readme_numbers.py``)."""

import json

from test_readme_numbers import BLOCK, ROOT


def training_blocks(page: str) -> list[tuple[str, str]]:
    """The results blocks of a page that quote a training run (``bench/results/*-synthetic-*.json``)."""
    return [(path, text) for path, text in BLOCK.findall((ROOT / page).read_text()) if "-synthetic-" in path]


def test_each_results_file_was_written_by_the_command_the_page_gives():
    blocks = training_blocks("docs/training.md") + training_blocks("README.md")
    for path, text in blocks:
        command = json.loads((ROOT / path).read_text())["command"]
        assert f"`{command}`" in text, f"{path} was written by {command!r}, which its paragraph does not name"
    commands = " ".join(text for _, text in blocks)
    assert "python examples/train_synthetic.py" in commands and "python examples/levels_synthetic.py" in commands

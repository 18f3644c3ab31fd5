"""The README's training section names the command that wrote each results file it quotes (the numbers
themselves are checked by ``test_readme_numbers.py``)."""

import json

from test_readme_numbers import BLOCK, ROOT


def training_section():
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("### Training and evaluation") : readme.index("## Benchmarks")]


def test_each_results_file_was_written_by_the_command_the_readme_gives():
    section = training_section()
    for path, text in BLOCK.findall(section):
        command = json.loads((ROOT / path).read_text())["command"]
        assert f"`{command}`" in text, f"{path} was written by {command!r}, which its paragraph does not name"
    assert "python examples/train_synthetic.py" in section and "python examples/levels_synthetic.py" in section

"""The "CPU serving against ONNX Runtime" part of the Deployment page (``docs/deployment.md``) names its results
file and the command that wrote it (the numbers themselves are checked by ``test_readme_numbers.py``)."""

import json

from test_readme_numbers import BLOCK, ROOT


def test_serving_results_come_from_the_comparison_script():
    page = (ROOT / "docs" / "deployment.md").read_text()
    section = page[page.index("## CPU serving against ONNX Runtime"):]
    section = section[: section.index("\n## ")]
    blocks = BLOCK.findall(section)
    assert blocks, "the section names no results file"
    for paths, _ in blocks:
        for path in paths.split():
            assert json.loads((ROOT / path).read_text())["command"].startswith("python bench/serving_vs_onnxruntime.py")
    assert "python bench/serving_vs_onnxruntime.py" in section

"""Every number the README's "CPU serving against ONNX Runtime" part quotes comes from the
committed results file it names, written by the command it names."""

import json
import re

from test_readme_training import BLOCK, ROOT, numbers_in


def test_serving_ratios_come_from_the_results_file():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### CPU serving against ONNX Runtime"): readme.index("## Command line")]
    blocks = BLOCK.findall(section)
    assert blocks, "the section names no results file"
    for path, text in blocks:
        record = json.loads((ROOT / path).read_text())
        measured = list(numbers_in(record))
        quoted = re.findall(r"(?<![\w.-])\d+\.\d+", text)
        assert len(quoted) >= 8, text
        for number in quoted:
            places = len(number.split(".")[1])
            assert any(round(v, places) == float(number) for v in measured), f"{number} is not in {path}"
        assert record["command"].startswith("python bench/serving_vs_onnxruntime.py")
    assert "python bench/serving_vs_onnxruntime.py" in section

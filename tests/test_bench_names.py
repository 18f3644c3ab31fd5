"""``ithp-fast bench`` never overwrites a results file: a second run of the day, or a tiny run, gets its own name."""

from ithp_fast.tools.benchmarks import new_results_path


def test_results_files_are_never_overwritten(tmp_path):
    first = new_results_path(tmp_path, "cpu-x", tiny=False, date="2026-11-26")
    assert first.name == "cpu-x-2026-11-26.json"
    first.write_text("{}")
    assert new_results_path(tmp_path, "cpu-x", tiny=False, date="2026-11-26").name == "cpu-x-2026-11-26-2.json"
    tiny = new_results_path(tmp_path, "cpu-x", tiny=True, date="2026-11-26")
    assert tiny.name == "cpu-x-2026-11-26-tiny.json"
    tiny.with_suffix(".md").write_text("")  # any of the three files of a run keeps its name taken
    assert new_results_path(tmp_path, "cpu-x", tiny=True, date="2026-11-26").name == "cpu-x-2026-11-26-tiny-2.json"

"""The renderer of ``ithp-fast bench``: a stored pytest-benchmark JSON -> Markdown table and chart.

Checked on a committed results file (tests/fixtures/bench_example.json, a real CPU run of a few
groups); expected values are computed here from the raw JSON.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ithp_fast.tools.benchmarks import (
    BASELINE,
    format_bytes,
    format_time,
    load_results,
    render_chart,
    render_files,
    render_markdown,
    results_from_benchmarks,
)

EXAMPLE = Path(__file__).parent / "fixtures" / "bench_example.json"


@pytest.fixture(scope="module")
def raw():
    return json.loads(EXAMPLE.read_text())


def _table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")][2:]  # past header and rule
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_every_benchmark_becomes_one_row_in_run_order(raw):
    header, results = load_results(EXAMPLE)
    rows = _table_rows(render_markdown(results, header))
    benches = raw["benchmarks"]
    assert len(rows) == len(results) == len(benches)
    groups_in_json = list(dict.fromkeys(b["group"] for b in benches))
    groups_in_table = list(dict.fromkeys(r[0] for r in rows))
    assert groups_in_table == groups_in_json
    for row in rows:
        bench = next(b for b in benches if b["group"] == row[0] and b["extra_info"]["provider"] == row[1])
        assert row[2] == bench["extra_info"]["dtype"]
        assert row[3] == format_time(bench["stats"]["median"])
        assert row[4] == format_time(bench["stats"]["iqr"])


def test_speedups_are_reference_median_over_provider_median(raw):
    _, results = load_results(EXAMPLE)
    rows = _table_rows(render_markdown(results))
    checked = 0
    for row in rows:
        group = [b for b in raw["benchmarks"] if b["group"] == row[0]]
        base = [b for b in group if b["extra_info"]["provider"] == BASELINE]
        if not base:
            assert row[5] == ""
            continue
        mine = next(b for b in group if b["extra_info"]["provider"] == row[1])
        assert row[5] == f"{base[0]['stats']['median'] / mine['stats']['median']:.2f}x"
        checked += 1
    assert checked >= 3  # the example holds groups with a reference and other providers
    first_in_each_group = {}
    for row in rows:
        first_in_each_group.setdefault(row[0], row[1])
    assert all(p == BASELINE for p in first_in_each_group.values())


def test_bandwidth_column_from_extra_info(raw):
    _, results = load_results(EXAMPLE)
    rows = _table_rows(render_markdown(results))
    with_bytes = [b for b in raw["benchmarks"] if "GBps" in b["extra_info"]]
    assert with_bytes, "the example should hold a benchmark with nbytes"
    for bench in with_bytes:
        row = next(r for r in rows if r[0] == bench["group"] and r[1] == bench["extra_info"]["provider"])
        e = bench["extra_info"]
        assert row[6] == f"{e['GBps']:.1f} ({e['pct_of_bandwidth']:.0f} %)"
        # GB/s is nbytes over the median time
        assert e["GBps"] == pytest.approx(e["nbytes"] / bench["stats"]["median"] / 1e9, rel=1e-2)


def test_memory_column_from_extra_info(raw):
    """``saved_bytes`` (kept for backward) or ``peak_bytes`` in a benchmark's extra_info fill the last column."""
    benches = json.loads(json.dumps(raw["benchmarks"]))
    benches[0]["extra_info"]["saved_bytes"] = 16_812_544
    benches[1]["extra_info"]["peak_bytes"] = 820_000
    rows = _table_rows(render_markdown(results_from_benchmarks(benches)))
    memory = {(r[0], r[1]): r[7] for r in rows}
    for bench, text in ((benches[0], "16.8 MB saved"), (benches[1], "820 kB peak")):
        assert memory[bench["group"], bench["extra_info"]["provider"]] == text
    assert sum(1 for value in memory.values() if value) == 2


def test_format_bytes():
    assert format_bytes(2_521_000_000) == "2.52 GB"
    assert format_bytes(35_900_000) == "35.9 MB"
    assert format_bytes(999) == "999 B"
    assert format_bytes(1000) == "1.00 kB"


def test_header_names_device_versions_and_date(raw):
    header, results = load_results(EXAMPLE)
    first_line = render_markdown(results, header).splitlines()[0]
    info = raw["machine_info"]["ithp_fast"]
    for text in (info["device"], f"torch {info['torch']}", raw["datetime"][:10]):
        assert text in first_line


def test_chart_has_one_bar_per_benchmark_and_one_tick_per_group(tmp_path):
    _, results = load_results(EXAMPLE)
    png = tmp_path / "chart.png"
    fig = render_chart(results, png, title="example")
    ax = fig.axes[0]
    assert len(ax.patches) == len(results)
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == pytest.approx(sorted(r.median_s * 1e6 for r in results))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(dict.fromkeys(r.group for r in results))
    (fig_legend,) = fig.legends
    legend = [t.get_text() for t in fig_legend.get_texts()]
    assert legend[0] == BASELINE and set(legend) == {r.provider for r in results}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 800 and height > 200


def test_render_files_and_the_render_command(tmp_path):
    md, png, table = render_files(EXAMPLE, tmp_path)
    assert md.read_text() == table and png.stat().st_size > 0
    proc = subprocess.run(
        [sys.executable, "-m", "ithp_fast", "bench", "--render", str(EXAMPLE), "--out", str(tmp_path / "again")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert table in proc.stdout
    assert (tmp_path / "again" / "bench_example.md").read_text() == table


def test_format_time():
    assert format_time(1.234e-5) == "12.3 µs"
    assert format_time(9.87e-7) == "0.987 µs"
    assert format_time(2.5e-4) == "250 µs"
    assert format_time(1.5e-3) == "1.50 ms"
    assert format_time(0.5) == "500 ms"
    assert format_time(2.0) == "2.00 s"


def test_a_file_that_is_not_benchmark_json_is_rejected(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="bad.json.*not a pytest-benchmark JSON"):
        load_results(bad)


def test_benchmarks_without_stats_are_left_out():
    # --benchmark-disable runs leave no stats; a benchmark without a provider keeps its name
    results = results_from_benchmarks(
        [
            {"name": "t1", "group": "g", "extra_info": {}, "stats": {"median": 1e-3, "iqr": 0, "rounds": 3}},
            {"name": "t2", "group": "g", "extra_info": {"provider": "x"}, "stats": None},
        ]
    )
    assert [(r.provider, r.median_s) for r in results] == [("t1", 1e-3)]

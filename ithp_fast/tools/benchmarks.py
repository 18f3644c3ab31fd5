"""``ithp-fast bench``: run the benchmark suite, keep its JSON, render a table and a chart.

    ithp-fast bench                        # pytest bench/ --benchmark-only, then render
    ithp-fast bench --render bench/results/<file>.json   # render a stored run again
    ithp-fast bench -- -k "train"          # anything after -- goes to pytest

A run writes ``bench/results/<device>-<date>.json`` (pytest-benchmark's JSON), ``.md`` (a
Markdown table: median time per call, speedup against each group's ``reference`` provider,
achieved GB/s against the device's memory bandwidth, recorded memory) and ``.png`` (a bar chart
of the times). ``--tiny`` runs are named ``<device>-<date>-tiny``; an existing results file is never
overwritten: the next free name ``...-2``, ``...-3`` is taken instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

BASELINE = "reference"
"""The provider every other provider of a group is compared with."""
MEMORY_KINDS = ("saved", "peak")
"""The memory a benchmark may record in its ``extra_info`` (``<kind>_bytes``), in that order."""


@dataclass(frozen=True)
class BenchResult:
    """One benchmark of a stored run: who did which work, and how fast."""

    group: str
    provider: str
    name: str
    median_s: float
    iqr_s: float
    rounds: int
    dtype: str
    gbps: Optional[float] = None
    pct_of_bandwidth: Optional[float] = None
    memory_bytes: Optional[int] = None
    memory_kind: Optional[str] = None
    """``"saved"`` (kept for the backward, ``extra_info["saved_bytes"]``) or ``"peak"``
    (allocated at the peak of one call, ``extra_info["peak_bytes"]``)."""


def results_from_benchmarks(benchmarks: Iterable[Mapping[str, Any]]) -> list[BenchResult]:
    """Turn pytest-benchmark's per-benchmark dicts (the JSON's ``"benchmarks"``) into results.

    A benchmark without a ``provider`` in its ``extra_info`` (not timed through ``measure``) is
    listed under its test name.
    """
    results = []
    for bench in benchmarks:
        stats = bench.get("stats") or {}
        if "median" not in stats:
            continue
        extra = bench.get("extra_info") or {}
        kind = next((k for k in MEMORY_KINDS if extra.get(f"{k}_bytes") is not None), None)
        results.append(
            BenchResult(
                group=bench.get("group") or extra.get("group") or bench["name"],
                provider=extra.get("provider") or bench["name"],
                name=bench["name"],
                median_s=float(stats["median"]),
                iqr_s=float(stats.get("iqr", 0.0)),
                rounds=int(stats.get("rounds", 0)),
                dtype=str(extra.get("dtype", "")),
                gbps=extra.get("GBps"),
                pct_of_bandwidth=extra.get("pct_of_bandwidth"),
                memory_bytes=None if kind is None else int(extra[f"{kind}_bytes"]),
                memory_kind=kind,
            )
        )
    return results


def load_results(path: os.PathLike | str) -> tuple[dict[str, Any], list[BenchResult]]:
    """Read a pytest-benchmark JSON file: ``(header, results)``.

    ``header`` holds the run's ``machine_info`` (with the ``ithp_fast`` device entry written by
    bench/conftest.py) and its ``datetime``.
    """
    with open(path) as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict) or "benchmarks" not in doc:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
    header = dict(doc.get("machine_info") or {})
    header["datetime"] = doc.get("datetime")
    return header, results_from_benchmarks(doc["benchmarks"])


def by_group(results: Sequence[BenchResult]) -> dict[str, list[BenchResult]]:
    """Results per group, groups in run order, the baseline provider first inside each group."""
    groups: dict[str, list[BenchResult]] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: r.provider != BASELINE)  # stable: run order otherwise
    return groups


def speedup(result: BenchResult, group: Sequence[BenchResult]) -> Optional[float]:
    """``median(reference) / median(result)`` inside the result's group; None without a reference."""
    base = next((r for r in group if r.provider == BASELINE), None)
    if base is None or result.median_s <= 0:
        return None
    return base.median_s / result.median_s


def _three_digits(value: float, unit: str) -> str:
    """``value`` with three significant digits (no decimals from 100 on), then ``unit``."""
    digits = max(0, 2 - int(math.floor(math.log10(value)))) if value > 0 else 0
    return f"{value:.{digits}f} {unit}"


def format_time(seconds: float) -> str:
    """Three significant digits in s, ms or µs."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            return _three_digits(seconds / scale, unit)
    raise AssertionError("unreachable")


def format_bytes(n: int) -> str:
    """Three significant digits in B, kB, MB or GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return _three_digits(n / scale, unit)
    return f"{n} B"


def describe_device(header: Mapping[str, Any]) -> str:
    """One line naming the device, the versions, the bandwidth and the date of a run."""
    info = header.get("ithp_fast") or {}
    parts = [f"**{info.get('device', header.get('processor') or 'unknown device')}**"]
    for key in ("torch", "triton"):
        if info.get(key):
            parts.append(f"{key} {info[key]}")
    if info.get("bandwidth_GBps"):
        parts.append(f"memory bandwidth {info['bandwidth_GBps']:.0f} GB/s ({info.get('bandwidth_source', '')})")
    if header.get("datetime"):
        parts.append(str(header["datetime"])[:10])
    return " · ".join(parts)


def render_markdown(results: Sequence[BenchResult], header: Optional[Mapping[str, Any]] = None) -> str:
    """A Markdown table: per group and provider, median time, speedup vs reference, GB/s, and the
    memory the benchmark recorded (bytes saved for backward, or peak bytes of one call)."""
    lines = []
    if header:
        lines += [describe_device(header), ""]
    lines += [
        "| group | provider | dtype | median | IQR | speedup vs reference | GB/s (% of bandwidth) | memory |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for group, rows in by_group(results).items():
        for r in rows:
            s = speedup(r, rows)
            gb = "" if r.gbps is None else f"{r.gbps:.1f} ({r.pct_of_bandwidth:.0f} %)"
            memory = "" if r.memory_bytes is None else f"{format_bytes(r.memory_bytes)} {r.memory_kind}"
            lines.append(
                f"| {group} | {r.provider} | {r.dtype} | {format_time(r.median_s)} | {format_time(r.iqr_s)} "
                f"| {'' if s is None else f'{s:.2f}x'} | {gb} | {memory} |"
            )
    return "\n".join(lines) + "\n"


def provider_colours(results: Sequence[BenchResult]) -> dict[str, Any]:
    """One colour per provider, in order of first appearance (the baseline grey)."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    providers = [BASELINE] + [p for p in dict.fromkeys(r.provider for r in results) if p != BASELINE]
    colours = {BASELINE: "0.55"}
    for i, p in enumerate(providers[1:]):
        colours[p] = palette[i % len(palette)]
    return colours


def render_chart(results: Sequence[BenchResult], path: Optional[os.PathLike | str] = None, *, title: str = ""):
    """A horizontal bar chart of median times (log scale), one bar per provider, grouped.

    Each bar is labelled with its time and its speedup against the group's reference. Saves a
    PNG to ``path`` when given; returns the matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    groups = by_group(results)
    colours = provider_colours(results)
    n_bars = sum(len(rows) for rows in groups.values())
    fig = Figure(figsize=(10, 1.2 + 0.22 * n_bars + 0.25 * len(groups)), layout="constrained")
    ax = fig.add_subplot()
    seen: set[str] = set()
    ticks, labels = [], []
    y = 0.0
    for group, rows in groups.items():
        height = 0.8 / len(rows)
        top = y
        for i, r in enumerate(rows):
            pos = top + i * height
            label = r.provider if r.provider not in seen else None
            seen.add(r.provider)
            ax.barh(pos, r.median_s * 1e6, height=height * 0.9, color=colours[r.provider], label=label)
            s = speedup(r, rows)
            text = format_time(r.median_s) + ("" if s is None or r.provider == BASELINE else f"  {s:.2f}x")
            ax.text(r.median_s * 1e6 * 1.05, pos, text, va="center", fontsize=7)
        ticks.append(top + (len(rows) - 1) * height / 2)
        labels.append(group)
        y += 1.0
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_ylim(len(groups) - 0.1, -0.5)  # first group on top, no empty margin
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (µs, log scale); label: time and speedup vs reference")
    times = [r.median_s * 1e6 for r in results] or [1.0]
    ax.set_xlim(min(times) / 3, max(times) * 6)  # room for the shortest bar and the longest label
    ax.grid(axis="x", which="both", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.legend(loc="outside lower center", ncols=min(4, len(seen)), fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def device_slug() -> str:
    """``<device>`` of ``bench/results/<device>-<date>.json``: the GPU's name, or the CPU's."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = "cpu"
        try:
            with open("/proc/cpuinfo") as fh:
                model = next((line.split(":", 1)[1] for line in fh if line.startswith("model name")), "")
            name = f"cpu {model} {torch.get_num_threads()}t"
        except OSError:
            pass
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def find_bench_dir(given: Optional[str]) -> Path:
    """The suite's folder: ``--bench-dir``, else ``bench/`` beside this package's source, else ./bench."""
    candidates = [Path(given)] if given else [Path(__file__).resolve().parents[2] / "bench", Path.cwd() / "bench"]
    for c in candidates:
        if (c / "conftest.py").is_file():
            return c
    raise FileNotFoundError(
        f"bench-dir: no benchmark suite (bench/conftest.py) found in {[str(c) for c in candidates]}; "
        "run from a checkout of the repository or pass --bench-dir"
    )


def render_files(json_path: Path, out_dir: Optional[Path] = None) -> tuple[Path, Path, str]:
    """Write ``<stem>.md`` and ``<stem>.png`` next to ``json_path`` (or in ``out_dir``)."""
    header, results = load_results(json_path)
    if not results:
        raise ValueError(f"{json_path}: no timed benchmarks in it (was it run with --benchmark-disable?)")
    out_dir = out_dir or json_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / f"{json_path.stem}.md", out_dir / f"{json_path.stem}.png"
    table = render_markdown(results, header)
    md_path.write_text(table)
    render_chart(results, png_path, title=describe_device(header).replace("**", ""))
    return md_path, png_path, table


def new_results_path(out_dir: Path, slug: str, tiny: bool, date: Optional[str] = None) -> Path:
    """``<slug>-<date>[-tiny].json`` in ``out_dir``, with ``-2``, ``-3``, ... added until no results file
    (JSON, Markdown or PNG) of that name exists: a run never overwrites another one's results."""
    stem = f"{slug}-{date or datetime.date.today().isoformat()}" + ("-tiny" if tiny else "")
    candidate, n = stem, 1
    while any((out_dir / f"{candidate}{suffix}").exists() for suffix in (".json", ".md", ".png")):
        n += 1
        candidate = f"{stem}-{n}"
    return out_dir / f"{candidate}.json"


def run_bench(args: argparse.Namespace) -> int:
    """``ithp-fast bench``: run the suite (unless ``--render``), write JSON, Markdown and PNG."""
    if args.render:
        try:
            md, png, table = render_files(Path(args.render), Path(args.output_dir) if args.output_dir else None)
        except (OSError, ValueError) as err:
            print(f"ithp-fast bench: --render: {err}", file=sys.stderr)
            return 2
        print(table)
        print(f"wrote {md} and {png}")
        return 0
    try:
        bench_dir = find_bench_dir(args.bench_dir)
    except FileNotFoundError as err:
        print(f"ithp-fast bench: {err}", file=sys.stderr)
        return 2
    out_dir = Path(args.output_dir) if args.output_dir else bench_dir / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = new_results_path(out_dir, device_slug(), args.tiny)
    env = dict(os.environ)
    if args.tiny:
        env["ITHP_BENCH_TINY"] = "1"
    if args.no_compile:
        env["ITHP_BENCH_COMPILE"] = "0"
    extra = list(args.pytest_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    cmd = [sys.executable, "-m", "pytest", str(bench_dir), "--benchmark-only", f"--benchmark-json={json_path}"] + extra
    print("+ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=bench_dir.parent, env=env)
    if not json_path.is_file():
        print(f"ithp-fast bench: pytest exited with {rc} and wrote no results", file=sys.stderr)
        return rc or 1
    md, png, table = render_files(json_path)
    print(table)
    print(f"wrote {json_path}, {md} and {png}")
    return rc


def register(sub) -> None:
    """Add ``bench`` to the ``ithp-fast`` command line."""
    p = sub.add_parser(
        "bench",
        help="run the benchmark suite; write bench/results/<device>-<date>.{json,md,png}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output-dir", "--out", help="folder for the results (default: bench/results)")
    p.add_argument("--bench-dir", help="the suite's folder (default: bench/ of this checkout)")
    p.add_argument("--tiny", action="store_true",
                   help="smallest shapes (ITHP_BENCH_TINY=1), for a quick check; results named <device>-<date>-tiny")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile providers (ITHP_BENCH_COMPILE=0)")
    p.add_argument("--render", metavar="JSON", help="only render a stored results JSON to .md and .png")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest arguments (e.g. -k train)")
    p.set_defaults(func=run_bench)

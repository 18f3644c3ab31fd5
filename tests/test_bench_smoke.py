"""Every benchmark runs once on tiny sizes, so that a broken benchmark fails CI.

The suite runs in a subprocess exactly as a user runs it (``pytest bench/``), without the
Triton interpreter that this test session switches on: the benchmarks must not need it.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def _bench_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["ITHP_BENCH_TINY"] = "1"
    env.update(extra)
    return env


def _run(cmd, timeout=600, **env):
    proc = subprocess.run(cmd, cwd=ROOT, env=_bench_env(**env), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_every_benchmark_runs_once_and_every_provider_equals_the_reference(tmp_path):
    """Check mode (``ITHP_BENCH_CHECK=1``): deterministic workloads, and each provider's result
    held against its group's reference; every provider that ran is checked at least once."""
    report, log = tmp_path / "bench.xml", tmp_path / "checks.tsv"
    _run([sys.executable, "-m", "pytest", str(BENCH), "--benchmark-disable", "-q", "-p", "no:cacheprovider",
          f"--junitxml={report}"], ITHP_BENCH_CHECK="1", ITHP_BENCH_CHECK_LOG=str(log))
    cases = ET.parse(report).getroot().iter("testcase")
    by_module: dict[str, list[str]] = {}
    for case in cases:
        outcome = "skipped" if case.find("skipped") is not None else "ran"
        assert case.find("failure") is None and case.find("error") is None, case.get("name")
        by_module.setdefault(case.get("classname", ""), []).append(outcome)
    modules = sorted(p.stem for p in BENCH.glob("bench_*.py"))
    for module in modules:
        outcomes = next((v for k, v in by_module.items() if k.endswith(module)), [])
        assert "ran" in outcomes, f"bench/{module}.py: no benchmark ran ({outcomes})"
    checks: dict[str, set] = {}
    for line in log.read_text().splitlines():
        _, provider, status = line.split("\t")
        checks.setdefault(provider, set()).add(status)
    unchecked = sorted(p for p, statuses in checks.items() if "checked" not in statuses and statuses != {"exempt"})
    assert not unchecked, f"providers never compared with a reference: {unchecked}"
    assert len(checks) >= 6, sorted(checks)


def test_bench_command_writes_json_table_and_chart(tmp_path):
    """``ithp-fast bench`` end to end on tiny sizes (one group, timed for real)."""
    proc = _run(
        [sys.executable, "-m", "ithp_fast", "bench", "--tiny", "--out", str(tmp_path), "--", "-q", "-k", "test_forward"]
    )
    (json_path,) = tmp_path.glob("*.json")
    for suffix in (".md", ".png"):
        assert json_path.with_suffix(suffix).is_file(), suffix
    table = json_path.with_suffix(".md").read_text()
    assert "| forward B=2 | reference |" in table and "1.00x" in table
    assert table in proc.stdout


def test_bench_command_rejects_a_missing_suite(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ithp_fast", "bench", "--bench-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_bench_env(),
    )
    assert proc.returncode != 0
    assert "bench-dir" in proc.stderr


@pytest.mark.parametrize("workload", ["train", "encode"])
def test_profile_command_writes_a_chrome_trace(tmp_path, workload):
    trace = tmp_path / "trace.json"
    proc = _run(
        [sys.executable, str(BENCH / "profile_workload.py"), "--workload", workload, "--batch", "2", "--tokens", "3",
         "--steps", "1", "--warmup", "1", "--device", "cpu", "--trace", str(trace)]
    )
    assert "per step:" in proc.stdout and "torch.profiler" in proc.stdout
    names = {event.get("name") for event in json.loads(trace.read_text())["traceEvents"]}
    expected = {"train": {"train_step", "forward", "backward"}, "encode": {"encode"}}[workload]
    assert expected <= names  # the NVTX stage names, recorded as torch.profiler spans

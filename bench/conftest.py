"""Benchmark harness: ``pytest bench/ --benchmark-only`` (pytest-benchmark underneath).

Contract for every ``bench_*.py``
---------------------------------
``measure(fn, *, group, provider, nbytes=None, extra=None) -> float`` (a fixture) times ``fn()``
through pytest-benchmark's ``benchmark`` fixture and returns its median time per call, in seconds.

- ``group``: the work being compared, e.g. ``"train step B=32"``. Every provider of one group must
  do the same work on the same inputs; the terminal summary, the Markdown table and the chart of
  ``ithp-fast bench`` compare providers inside a group.
- ``provider``: who does it: ``"reference"`` (eager; the baseline of each group's speedups),
  ``"reference+torch.compile"``, ``"ithp_fast"`` (eager), ``"ithp_fast+graphs"`` / ``"…+compile"``.
- ``nbytes``: the bytes the work must move at least (inputs read once + outputs written once);
  gives the achieved GB/s and the fraction of the device's memory bandwidth.
- ``extra``: more ``extra_info`` (JSON-serialisable); ``extra={"dtype": torch.bfloat16}`` names
  the dtype (default: torch's default dtype).

Timing. On CUDA the clock is a CUDA-event clock: each reading records an event on the current
stream and waits for it, so a round's time is the GPU time from the first launch to the end of the
last kernel, never the time to enqueue asynchronous launches. On the CPU it is
``time.perf_counter``. After a few warm-up calls (where ``torch.compile`` / CUDA-graph capture
happen) the number of calls per round is chosen so that a round lasts about 1 ms (CUDA) or 5 ms
(CPU), and the number of rounds from a time budget per benchmark (``ITHP_BENCH_BUDGET`` seconds,
default 0.15 on CUDA, 0.4 on CPU; ``ITHP_BENCH_ROUNDS`` fixes the rounds). With
``--benchmark-disable`` ``fn`` runs once and its single wall time is returned.

Recorded in each result's ``extra_info``: group, provider, device name, torch / triton versions,
dtype, timer, median seconds, and with ``nbytes`` the achieved GB/s, the device's memory bandwidth
(CUDA: the peak from the memory clock and bus width; CPU: a measured copy) and the percentage.

Sizes. ``from scale import DEVICE, SCALE, TOKENS, pick, compiled`` (bench/scale.py):
``pick(cuda=[...], cpu=[...], tiny=[...])`` chooses the parameter list: smaller batches and fewer
rounds without CUDA, the smallest shapes with ``ITHP_BENCH_TINY=1`` (the CI smoke test runs the
whole suite that way with ``--benchmark-disable``). ``compiled(fn, mode=...)`` is ``torch.compile``
for the compiled providers (the cheap ``"eager"`` backend in tiny mode); skip compiled providers
when ``scale.COMPILE`` is false (``ITHP_BENCH_COMPILE=0``).

``ITHP_BENCH_THREADS=n`` sets torch's CPU threads for the run (recorded in the device name).

Check mode (``ITHP_BENCH_CHECK=1``, what the CI smoke test runs, with ``ITHP_BENCH_TINY=1`` and
``--benchmark-disable``): the workloads are deterministic (``workloads.py``) and ``measure``
compares ``fn()``'s result with the result of its group's ``reference`` provider (which runs first
in every group), tensor for tensor, within the tolerance of the dtype: every provider is checked
against the reference at least once in the suite (the tensors both return, in order: a provider
that returns only the logits is held against the reference's logits). ``compare=False`` marks a provider that does
other work than its group's reference (a bound such as "first Linear alone", or a draw from a
different random stream); ``compare=callable`` turns the result into the tensors to compare.
With ``ITHP_BENCH_CHECK_LOG=FILE`` each benchmark appends ``group<TAB>provider<TAB>checked|unchecked|exempt``.

This conftest never sets ``TRITON_INTERPRET``: on a CPU the fast path is the pure-PyTorch backend.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time
from typing import Any, Callable, Optional

import pytest
import torch
from scale import CHECK, CUDA, DEVICE, SCALE

from ithp_fast.tools.benchmarks import BASELINE

if os.environ.get("ITHP_BENCH_THREADS"):  # CPU threads for the whole run (default: torch's choice)
    torch.set_num_threads(int(os.environ["ITHP_BENCH_THREADS"]))

# Per-scale timing plan: warm-up calls, target length of one round, calls per round at most,
# rounds at least / at most, default budget (seconds of timed rounds per benchmark).
_PLAN = {
    "cuda": dict(warmup=3, round_s=1e-3, max_iters=200, min_rounds=10, max_rounds=30, budget=0.15),
    "cpu": dict(warmup=2, round_s=5e-3, max_iters=50, min_rounds=3, max_rounds=20, budget=0.4),
    "tiny": dict(warmup=1, round_s=1e-3, max_iters=10, min_rounds=2, max_rounds=5, budget=0.05),
}


def _versions() -> dict[str, Optional[str]]:
    try:
        import triton

        triton_version: Optional[str] = triton.__version__
    except ImportError:
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _copy_bandwidth(device: str) -> float:
    """Measured copy bandwidth in bytes/s (fastest of a few copies), counting bytes read and written."""
    n = (256 if device == "cuda" else 64) * 2**20
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    clock = event_clock() if device == "cuda" else time.perf_counter
    best = math.inf
    for _ in range(10 if device == "cuda" else 5):  # the fastest copy: least disturbed by other work
        start = clock()
        dst.copy_(src)
        best = min(best, clock() - start)
    return 2 * n / best


@functools.lru_cache(maxsize=None)
def device_info() -> dict[str, Any]:
    """Name, versions and memory bandwidth of the device the suite runs on (computed once)."""
    info: dict[str, Any] = {"device_type": DEVICE, **_versions()}
    if CUDA:
        props = torch.cuda.get_device_properties(0)
        info["device"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["sm_count"] = props.multi_processor_count
        clock_khz = getattr(props, "memory_clock_rate", 0)
        bus_bits = getattr(props, "memory_bus_width", 0)
        if clock_khz and bus_bits:
            # Double data rate: two transfers per clock on a bus of bus_bits.
            info["peak_bandwidth_GBps"] = round(2 * clock_khz * 1e3 * bus_bits / 8 / 1e9, 1)
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    else:
        info["device"] = f"CPU {_cpu_name()} ({torch.get_num_threads()} threads)"
    info["copy_bandwidth_GBps"] = round(_copy_bandwidth(DEVICE) / 1e9, 1)
    info["bandwidth_GBps"] = info.get("peak_bandwidth_GBps", info["copy_bandwidth_GBps"])
    info["bandwidth_source"] = "peak (memory clock x bus width)" if "peak_bandwidth_GBps" in info else "measured copy"
    return info


def event_clock() -> Callable[[], float]:
    """A CUDA-event clock in seconds: each reading records an event and waits for it.

    The reading accumulates event-to-event intervals (each one measured exactly by
    ``Event.elapsed_time``), so it never loses precision as the run gets longer.
    """
    state = {"last": None, "total": 0.0}

    def cuda_event_clock() -> float:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        event.synchronize()
        if state["last"] is not None:
            state["total"] += state["last"].elapsed_time(event) / 1e3
        state["last"] = event
        return state["total"]

    return cuda_event_clock


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    """Name the device, the versions and the memory bandwidth in the JSON's ``machine_info``."""
    machine_info["ithp_fast"] = {**device_info(), "scale": SCALE, "torch_threads": torch.get_num_threads()}


CHECK_TOLERANCES = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-9, atol=1e-12),
                    "bfloat16": dict(rtol=2e-2, atol=2e-2)}
_reference_results: dict[str, list] = {}


def _tensors(result: Any) -> list:
    """The tensors of a result (a tensor, numpy array, sequence or named tuple of them), in order."""
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return [t for item in result for t in _tensors(item)]
    return [torch.as_tensor(result).detach().cpu().clone()]  # a copy: later calls may update it in place


def _check_against_reference(group: str, provider: str, dtype: str, result: Any, compare: Any) -> None:
    """Check mode: the reference's result is kept; every other provider's must equal it."""
    if compare is False:
        status = "exempt"
    else:
        got = _tensors(compare(result) if callable(compare) else result)
        if provider == BASELINE:
            _reference_results[group] = got
            status = "checked"
        elif group not in _reference_results:
            status = "unchecked"  # the reference did not run (deselected or skipped)
        else:
            want = _reference_results[group]  # a provider may return a leading part (logits alone)
            assert got and want, f"{group} / {provider}: nothing to compare ({len(got)} / {len(want)} tensors)"
            for i, (a, b) in enumerate(zip(got, want)):
                torch.testing.assert_close(a.to(b.dtype), b, **CHECK_TOLERANCES.get(dtype, CHECK_TOLERANCES["float32"]),
                                           msg=lambda m: f"{group} / {provider}, result {i}: {m}")
            status = "checked"
    log = os.environ.get("ITHP_BENCH_CHECK_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{group}\t{provider}\t{status}\n")


@pytest.fixture
def measure(benchmark):
    """``measure(fn, *, group, provider, nbytes=None, extra=None, compare=True) -> median seconds``
    (see module doc)."""
    used = []

    def run(
        fn: Callable[[], Any],
        *,
        group: str,
        provider: str,
        nbytes: Optional[int] = None,
        extra: Optional[dict] = None,
        compare: Any = True,
    ) -> float:
        if used:
            raise RuntimeError("measure: call it once per benchmark (pytest-benchmark times one function per test)")
        used.append(True)
        extra = dict(extra or {})
        dtype = _dtype_name(extra.pop("dtype", torch.get_default_dtype()))
        if CHECK:
            _check_against_reference(group, provider, dtype, fn(), compare)
        info = device_info()
        clock = event_clock() if CUDA else time.perf_counter
        benchmark.group = group
        benchmark.extra_info.update(
            group=group,
            provider=provider,
            device=info["device"],
            torch=info["torch"],
            triton=info["triton"],
            dtype=dtype,
            timer="cuda-events" if CUDA else "perf_counter",
            **extra,
        )

        if benchmark.disabled:  # pedantic then calls fn once, untimed: time that call here
            start = clock()
            benchmark.pedantic(fn)
            if CUDA:
                torch.cuda.synchronize()
            return clock() - start

        plan = _PLAN[SCALE]
        for _ in range(plan["warmup"]):
            fn()
        probe_calls = 5 if CUDA else 1
        start = clock()
        for _ in range(probe_calls):
            fn()
        per_call = max((clock() - start) / probe_calls, 1e-7)
        iterations = int(min(plan["max_iters"], max(1, math.ceil(plan["round_s"] / per_call))))
        budget = _env_float("ITHP_BENCH_BUDGET", plan["budget"])
        rounds = int(os.environ.get("ITHP_BENCH_ROUNDS", "0")) or int(
            min(plan["max_rounds"], max(plan["min_rounds"], round(budget / (per_call * iterations))))
        )
        # pytest-benchmark reads its clock from this attribute when it builds each round's runner.
        benchmark._timer = clock
        benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
        median = float(benchmark.stats.stats.median)
        benchmark.extra_info["median_s"] = median
        if nbytes:
            gbps = nbytes / median / 1e9
            benchmark.extra_info.update(
                nbytes=int(nbytes),
                GBps=round(gbps, 2),
                bandwidth_GBps=info["bandwidth_GBps"],
                bandwidth_source=info["bandwidth_source"],
                pct_of_bandwidth=round(100 * gbps / info["bandwidth_GBps"], 1),
            )
        return median

    return run


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config) -> None:
    """After pytest-benchmark's tables: each group's providers with speedups against the reference."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    from ithp_fast.tools.benchmarks import render_markdown, results_from_benchmarks

    docs = [bench.as_dict(include_data=False) for bench in session.benchmarks if bench]
    if not docs:
        return
    terminalreporter.write_sep("-", "ithp_fast: speedup against the reference, per group")
    terminalreporter.write_line(render_markdown(results_from_benchmarks(docs), {"ithp_fast": device_info()}))

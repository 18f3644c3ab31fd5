"""Load test of ``ithp-fast serve`` against the server a Hugging Face user writes (FastAPI and
``pipeline("text-classification")`` per request, ``bench/servers/hf_pipeline_server.py``).

    python bench/serve_load.py --checkpoint DIR                   # the synthetic checkpoint
    python bench/serve_load.py --make-base-model models/base      # deberta-v3-base's shape, random weights
    python bench/serve_load.py --checkpoint models/base --name base --int8
    python bench/serve_load.py --checkpoint DIR --compare-spin    # the CPU default: idle threads spin or sleep
    python bench/serve_load.py --checkpoint DIR --compare-threads # the CPU default: every core, or one thread
    python bench/serve_load.py --checkpoint DIR --compare-runtimes  # the CPU default: ONNX Runtime, or torch

Every server is one process on the loopback address with the same thread count; clients (one keep-alive
connection each, one text per request, texts of the synthetic test split in turn) run in this process on
asyncio streams, whose CPU cost is small next to any HTTP client library's: the clients share the cores
with the servers. For each client count the servers take turns (A, B, A, B, ...), each turn a warm-up
then a fixed window, so both see the same load from the rest of the machine; every turn is recorded,
and each figure is the median over the rounds with its range. The whole run is bounded: a fixed number
of rounds of fixed length, requests per client capped, and every server stopped at the end. Also
measured: ``model.predict`` in this process on one text (the 1-client latency's floor), and with
``--int8`` the quantised program's scores against float32 (max abs difference; on a trained
checkpoint, its test metrics) and the two programs' speed in this process.
Results: ``bench/results/serve-load-<name>-<date>.json`` (the machine's load average included).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = (1, 8, 32)
MAX_REQUESTS_PER_CLIENT = 20_000
START_TIMEOUT = 600
LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)


# -- texts and models


def synthetic_texts(seed: int = 0, count: int = 128) -> tuple[list[str], np.ndarray]:
    """The synthetic set's test texts (``seed``'s set) and labels."""
    from ithp_fast.data.synthetic import SyntheticSpec, make_synthetic

    test = make_synthetic(SyntheticSpec(seed=seed, sizes=(1, 1, count)))["test"]
    return [" ".join(e[0][0]) for e in test], np.array([float(np.asarray(e[1]).reshape(())) for e in test])


def make_base_model(directory: str) -> None:
    """deberta-v3-base's shape (``ITHPDebertaConfig``'s default backbone: hidden 768, 12 layers, 12 heads,
    intermediate 3072, vocab 128100) with ITHP at the paper's sizes, random weights and a word-level tokenizer
    over the synthetic set's words, saved with ``save_pretrained``: a model directory ``ithp-fast serve`` and
    ``pipeline`` read."""
    import torch

    import ithp_fast
    from ithp_fast.data import WordVocabulary
    from ithp_fast.data.synthetic import FILLERS, INTENSIFIERS, NEGATORS, SENTIMENT

    torch.manual_seed(0)
    config = ithp_fast.ITHPDebertaConfig(ithp=ithp_fast.ITHPConfig.for_dataset("mosi"), max_seq_length=50,
                                         eval_sampling="mean")
    words = sorted(set(FILLERS) | set(NEGATORS) | set(INTENSIFIERS) | set(SENTIMENT))
    model = ithp_fast.ITHPDeberta(config, tokenizer=WordVocabulary(words).to_tokenizer(50)).eval()
    model.save_pretrained(directory)


# -- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on a free loopback port, started and stopped by this script."""

    def __init__(self, name: str, argv: list[str], env: dict, port: int) -> None:
        self.name, self.port = name, port
        self.log = open(f"/tmp/serve-load-{name.replace(' ', '-')}-{port}.log", "w")
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=ROOT, start_new_session=True)  # its own group: stop() ends its children
        self.started = time.perf_counter()
        self.ready_after = self.wait_ready()

    def wait_ready(self) -> float:
        while time.perf_counter() - self.started < START_TIMEOUT:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"{self.name} was not healthy after {START_TIMEOUT} s")

    def stop(self) -> None:
        """SIGTERM to the server and the processes it started (LitServe's workers), SIGKILL after 30 s."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # any child left behind
        except ProcessLookupError:
            pass
        self.log.close()


def ours(checkpoint: str, threads: int, extra: list[str], name: str = "ithp-fast serve") -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "ithp_fast", "serve", "--checkpoint", checkpoint, "--port", str(port),
            "--threads", str(threads), *extra]
    return Server(name, argv, {}, port)


def baseline(checkpoint: str, threads: int) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "hf_pipeline_server:app", "--app-dir", str(ROOT / "bench" / "servers"),
            "--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {"ITHP_BASELINE_MODEL": checkpoint, "ITHP_BASELINE_THREADS": str(threads)}
    return Server("pipeline per request", argv, env, port)


# -- clients


def request_bytes(port: int, text: str) -> bytes:
    body = json.dumps({"text": text}).encode()
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def client(port: int, requests: list[bytes], offset: int, record_from: float, stop_at: float,
                 latencies: list, failures: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in range(MAX_REQUESTS_PER_CLIENT):
            start = time.perf_counter()
            if start >= stop_at:
                break
            writer.write(requests[(offset + n) % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(LENGTH.search(head).group(1)))
            status = int(head[9:12])
            if start >= record_from:
                (latencies if status == 200 else failures).append(time.perf_counter() - start)
    finally:
        writer.close()


def one_turn(port: int, texts: list[str], clients: int, warmup: float, seconds: float) -> dict:
    requests = [request_bytes(port, t) for t in texts]

    async def run() -> tuple[list, list]:
        latencies, failures = [], []
        now = time.perf_counter()
        await asyncio.gather(*(client(port, requests, 7 * c, now + warmup, now + warmup + seconds, latencies,
                                      failures) for c in range(clients)))
        return latencies, failures

    latencies, failures = asyncio.run(run())
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "failed": len(failures), "throughput": len(latencies) / seconds,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved(servers: list[Server], texts: list[str], client_counts, rounds: int, warmup: float,
                seconds: float, background: int) -> dict:
    """Each client count: ``rounds`` rounds, each server in turn (the order alternating); per server the
    rounds' figures and their median and range, and each server's throughput over the first's per round."""
    out = {}
    for clients in client_counts:
        turns = {s.name: [] for s in servers}
        for r in range(rounds):
            for server in (servers if r % 2 == 0 else servers[::-1]):
                with busy(background, warmup + seconds + 1):
                    turns[server.name].append(one_turn(server.port, texts, clients, warmup, seconds))
                print(f"  {clients} clients, round {r + 1}, {server.name}: {turns[server.name][-1]}", flush=True)
        first = servers[0].name
        out[str(clients)] = {
            name: {"rounds": rs, **{k: spread([t[k] for t in rs]) for k in ("throughput", "p50_ms", "p99_ms")},
                   "throughput_vs_" + first: spread([t["throughput"] / f["throughput"]
                                                     for t, f in zip(rs, turns[first])])}
            for name, rs in turns.items()}
    return out


class busy:
    """``count`` processes spinning on the CPU for ``seconds`` (a fixed background load), ended on exit."""

    def __init__(self, count: int, seconds: float) -> None:
        code = f"import time\nt = time.time() + {seconds}\nwhile time.time() < t:\n    pass"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


# -- in-process figures


def predict_latency(checkpoint: str, text: str, threads: int, calls: int = 200, seconds: float = 30) -> dict:
    """``model.predict([text])`` in this process: the 1-client latency with no server at all (``calls`` calls or
    ``seconds``, whichever ends first)."""
    import torch

    import ithp_fast

    torch.set_num_threads(threads)
    model = ithp_fast.ITHPDeberta.from_pretrained(checkpoint).eval()
    times, end = [], time.perf_counter() + seconds
    while len(times) < calls and time.perf_counter() < end:
        start = time.perf_counter()
        model.predict([text])
        times.append((time.perf_counter() - start) * 1000)
    return {"calls": len(times), "p50_ms": float(np.percentile(times[2:], 50))}


def int8_figures(checkpoint: str, texts: list[str], labels: np.ndarray, threads: int, trained: bool,
                 rounds: int = 9) -> dict:
    """The int8 program against float32: scores on ``texts`` and speed at batch 1 and 32, in this process."""
    from ithp_fast.serving.bundle import BundleScorer
    from ithp_fast.serving.onnx_cache import cached_program
    from ithp_fast.training.metrics import sentiment_metrics

    scorers = {q: BundleScorer(cached_program(checkpoint, q), threads=threads) for q in ("none", "int8")}
    scores = {q: np.concatenate([np.asarray(s.score(texts[i:i + 32]).scores, dtype=np.float64)
                                 for i in range(0, len(texts), 32)]) for q, s in scorers.items()}
    out = {"texts": len(texts), "max_abs_difference": float(np.abs(scores["int8"] - scores["none"]).max()),
           "mean_abs_difference": float(np.abs(scores["int8"] - scores["none"]).mean())}
    if trained:
        metrics = {q: sentiment_metrics(v, labels, "authors") for q, v in scores.items()}
        out["metrics"] = {"float32": metrics["none"], "int8": metrics["int8"],
                          "change": {k: metrics["int8"][k] - metrics["none"][k] for k in metrics["none"]}}
    for batch in (1, 32):
        times = {q: [] for q in scorers}
        for _ in range(rounds):
            for q, s in scorers.items():
                s.score(texts[:batch])
                start = time.perf_counter()
                for _ in range(3):
                    s.score(texts[:batch])
                times[q].append((time.perf_counter() - start) / 3 * 1000)
        out[f"batch_{batch}"] = {"float32_ms": spread(times["none"]), "int8_ms": spread(times["int8"]),
                                 "speedup": spread([f / i for f, i in zip(times["none"], times["int8"])])}
    return out


# -- the documentation's table


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if value < 10 ** digits - 0.5 else f"{value:.0f}"


def render(path: str) -> str:
    """A Markdown table of a results file: per client count and server, the rounds' medians and ranges."""
    result = json.loads(Path(path).read_text())
    load = result["load"]
    first = next(iter(next(iter(load.values()))))
    lines = ["| clients | server | requests/s | × baseline | p50 | p99 |", "|---:|---|---:|---:|---:|---:|"]
    for clients, servers in load.items():
        for name, r in servers.items():
            t, ratio, p50, p99 = r["throughput"], r["throughput_vs_" + first], r["p50_ms"], r["p99_ms"]
            vs = "" if name == first else f"{fmt(ratio['median'])}× ({fmt(ratio['min'])}-{fmt(ratio['max'])})"
            lines.append(f"| {clients} | {name} | {fmt(t['median'])} ({fmt(t['min'])}-{fmt(t['max'])}) | {vs} | "
                         f"{fmt(p50['median'])} ms ({fmt(p50['min'])}-{fmt(p50['max'])}) | "
                         f"{fmt(p99['median'])} ms ({fmt(p99['min'])}-{fmt(p99['max'])}) |")
    return "\n".join(lines)


# -- the run


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown")
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "loadavg": list(os.getloadavg())}


def compared_servers(args: argparse.Namespace) -> list:
    """The two ``ithp-fast serve`` settings a ``--compare-*`` option runs in turn, the default first."""
    if args.compare_spin:
        return [ours(args.checkpoint, args.threads, ["--spin", "off"], "spin off"),
                ours(args.checkpoint, args.threads, ["--spin", "on"], "spin on")]
    if args.compare_threads:
        return [ours(args.checkpoint, args.threads, [], f"{args.threads} threads"),
                ours(args.checkpoint, 1, [], "1 thread")]
    return [ours(args.checkpoint, args.threads, ["--runtime", "onnxruntime"], "onnxruntime"),
            ours(args.checkpoint, args.threads, ["--runtime", "torch"], "torch")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a checkpoint or model directory")
    p.add_argument("--make-base-model", metavar="DIR", help="save deberta-v3-base's shape (random weights) to DIR")
    p.add_argument("--name", default="synthetic", help="the model's name in the results file")
    p.add_argument("--int8", action="store_true", help="also serve --quantize int8 and measure its accuracy cost")
    p.add_argument("--compare-spin", action="store_true",
                   help="ithp-fast serve with ONNX Runtime's idle threads spinning against sleeping, with and "
                        "without --background load, instead of the comparison with the baseline")
    p.add_argument("--compare-threads", action="store_true",
                   help="ithp-fast serve with --threads against 1 thread, with and without --background load, "
                        "instead of the comparison with the baseline")
    p.add_argument("--compare-runtimes", action="store_true",
                   help="ithp-fast serve on ONNX Runtime against --runtime torch (the CPU candidates), with and "
                        "without --background load, instead of the comparison with the baseline")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of each turn not recorded")
    p.add_argument("--seconds", type=float, default=6.0, help="seconds recorded per turn")
    p.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS))
    p.add_argument("--background", type=int, default=1,
                   help="busy processes in the loaded runs of the --compare-* options")
    p.add_argument("--trained", action="store_true", help="the checkpoint was trained on the synthetic set "
                                                          "(seed 0): report the int8 metrics' change")
    p.add_argument("--output", help="default: bench/results/serve-load-<name>-<date>.json")
    p.add_argument("--render", metavar="FILE",
                   help="print a results file as the documentation's table (docs/deployment.md)")
    args = p.parse_args(argv)
    if args.render:
        print(render(args.render))
        return 0
    if args.make_base_model:
        make_base_model(args.make_base_model)
        print(f"wrote {args.make_base_model}")
        return 0
    if not args.checkpoint:
        p.error("--checkpoint is required")
    texts, labels = synthetic_texts()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    result = {"name": args.name, "checkpoint": args.checkpoint, "date": stamp, "machine_start": machine(),
              "settings": {k: getattr(args, k) for k in ("threads", "rounds", "warmup", "seconds", "clients",
                                                         "background")}}
    comparing = args.compare_spin or args.compare_threads or args.compare_runtimes
    servers = []
    try:
        if comparing:
            servers = compared_servers(args)
            result["quiet"] = interleaved(servers, texts, args.clients, args.rounds, args.warmup, args.seconds, 0)
            result["loaded"] = interleaved(servers, texts, args.clients, args.rounds, args.warmup, args.seconds,
                                           args.background)
        else:
            servers = [baseline(args.checkpoint, args.threads), ours(args.checkpoint, args.threads, [])]
            if args.int8:
                servers.append(ours(args.checkpoint, args.threads, ["--quantize", "int8"], "ithp-fast serve int8"))
            result["load"] = interleaved(servers, texts, args.clients, args.rounds, args.warmup, args.seconds, 0)
        result["startup_s"] = {s.name: s.ready_after for s in servers}
    finally:
        for s in servers:
            s.stop()
    if not comparing:
        result["predict_in_process"] = predict_latency(args.checkpoint, texts[0], args.threads)
        if args.int8:
            result["int8"] = int8_figures(args.checkpoint, texts, labels, args.threads, args.trained)
    result["machine_end"] = machine()
    out = Path(args.output or ROOT / "bench" / "results" / f"serve-load-{args.name}-{stamp}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

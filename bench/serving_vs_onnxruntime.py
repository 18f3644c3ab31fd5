"""CPU serving against ONNX Runtime, side by side in one process: ``python bench/serving_vs_onnxruntime.py``.

For ``b1`` (the paper's ITHP, 50 tokens, batch 1 and 32) and the whole ITHP-DeBERTa (50 tokens,
batch 1 and 8; a small random config, or deberta-v3-base's shape with ``--deberta base``), every
provider runs the same inputs, float32, posterior mean, with ``--threads`` threads (torch and
ONNX Runtime alike). The providers take turns (interleaved, the order rotating per repeat);
each turn times ``--calls`` calls one by one and keeps their median. A machine shared with other
work is noisy, so what counts is the ratio to ONNX Runtime *within* each repeat: the JSON holds
every repeat's times and ratios, and their median, minimum and maximum.

Providers: ``onnxruntime`` (the program written by ``ithp_fast.export``, run in an
``InferenceSession`` with ONNX Runtime's default options: the baseline of every ratio),
``onnxruntime (threads not spinning)`` (the same with ``session.intra_op.allow_spinning=0``),
``ithp_fast`` (the serving wrappers' CPU defaults: ``ServingEncoder(model)``, the prepacked
oneDNN chain, and ``ServingDeberta(model)``, ONNX Runtime with idle threads sleeping),
``ithp_fast (runtime='onnxruntime')`` (``ServingEncoder`` on ONNX Runtime), ``aoti`` (the
AOTInductor package of the same export) and ``torch eager`` (``encode`` / ``deberta_logits``, for scale). Writes
``bench/results/cpu-serving-vs-onnxruntime-<date>.json`` (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def _median_ms(fn: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def interleaved(providers: dict[str, Callable[[], object]], repeats: int, calls: int, warmup: int = 3) -> dict:
    """Per provider, the median ms of each repeat; per repeat, ``onnxruntime``'s time over each's."""
    for fn in providers.values():
        for _ in range(warmup):
            fn()
    names = list(providers)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(_median_ms(providers[name], calls))
    result = {"ms": times, "ms_median": {n: statistics.median(t) for n, t in times.items()}, "vs_onnxruntime": {}}
    for name in names:
        if name == "onnxruntime":
            continue
        ratios = [o / t for o, t in zip(times["onnxruntime"], times[name])]
        result["vs_onnxruntime"][name] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                          "per_repeat": ratios}
    return result


def _session(path: str, threads: int, spinning: bool = True):
    """An ``InferenceSession`` as a user makes one (``spinning``: ONNX Runtime's default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def b1_comparisons(args, folder: str) -> dict:
    import ithp_fast
    from ithp_fast import ITHPConfig

    torch.manual_seed(0)
    model = ithp_fast.ITHP(ITHPConfig.for_dataset("mosi")).eval()
    onnx_path = ithp_fast.export(model, os.path.join(folder, "b1.onnx"), format="onnx", tokens=args.tokens)[0]
    session, quiet = _session(onnx_path, args.threads), _session(onnx_path, args.threads, spinning=False)
    aoti = None
    if args.aoti:
        aoti = torch._inductor.aoti_load_package(
            ithp_fast.export(model, os.path.join(folder, "b1.pt2"), format="aoti", tokens=args.tokens)[0])
    server, on_ort = ithp_fast.ServingEncoder(model), ithp_fast.ServingEncoder(model, runtime="onnxruntime")
    out = {"ithp_fast_path": server.path, "ithp_fast (runtime='onnxruntime')_path": on_ort.path}
    for batch in (1, 32):
        x = torch.randn(batch, args.tokens, model.config.X0_dim, generator=torch.Generator().manual_seed(batch))
        feeds = {"x": x.numpy()}
        providers = {"onnxruntime": lambda: session.run(None, feeds), "ithp_fast": lambda: server(x),
                     "ithp_fast (runtime='onnxruntime')": lambda: on_ort(x),
                     "onnxruntime (threads not spinning)": lambda: quiet.run(None, feeds),
                     "torch eager": lambda: ithp_fast.encode.encode(model, x)}
        if aoti is not None:
            providers["aoti"] = lambda: aoti(x)
        with torch.no_grad():
            calls = args.calls if batch == 1 else max(3, args.calls // 8)
            out[f"B={batch}"] = interleaved(providers, args.repeats, calls)
        print(f"b1 B={batch}", _summary(out[f"B={batch}"]), flush=True)
    return out


def deberta_comparisons(args, folder: str) -> dict:
    from bench_deberta import _SHAPES, _V3_BASE
    from transformers import DebertaV2Config

    import ithp_fast
    from ithp_fast import ITHPConfig, ITHPDeberta
    from ithp_fast.serving.deberta import deberta_logits

    config = DebertaV2Config(**{**_V3_BASE, **({} if args.deberta == "base" else _SHAPES["cpu"])})
    torch.manual_seed(0)
    model = ITHPDeberta(config, ITHPConfig.for_dataset("mosi", X0_dim=config.hidden_size), ithp_cls=ithp_fast.ITHP,
                        eval_sampling="mean").eval()
    onnx_path = ithp_fast.export(model, os.path.join(folder, "model.onnx"), format="onnx", tokens=args.tokens)[0]
    session, quiet = _session(onnx_path, args.threads), _session(onnx_path, args.threads, spinning=False)
    server = ithp_fast.ServingDeberta(model, tokens=args.tokens, onnx_file=onnx_path)  # the CPU default: ONNX Runtime
    aoti = None
    if args.aoti:
        aoti = torch._inductor.aoti_load_package(
            ithp_fast.export(model, os.path.join(folder, "model.pt2"), format="aoti", tokens=args.tokens)[0])
    out = {"shape": "deberta-v3-base" if args.deberta == "base" else "small config", "config": config.to_dict()}
    for batch in (1, 8):
        g = torch.Generator().manual_seed(batch)
        ids = torch.randint(0, config.vocab_size, (batch, args.tokens), generator=g)
        mask = torch.ones_like(ids)
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        providers = {"onnxruntime": lambda: session.run(None, feeds), "ithp_fast": lambda: server(ids, mask),
                     "onnxruntime (threads not spinning)": lambda: quiet.run(None, feeds),
                     "torch eager": lambda: deberta_logits(model, ids, mask)}
        if aoti is not None:
            providers["aoti"] = lambda: aoti(ids, mask)
        calls = max(3, args.calls // (10 if args.deberta == "small" else 100) // batch)
        with torch.no_grad():
            out[f"B={batch}"] = interleaved(providers, args.repeats, calls)
        print(f"ITHP-DeBERTa B={batch}", _summary(out[f"B={batch}"]), flush=True)
    return out


def _summary(result: dict) -> str:
    ms = ", ".join(f"{n} {t:.3g} ms" for n, t in result["ms_median"].items())
    ratios = ", ".join(f"{n} {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"
                       for n, r in result["vs_onnxruntime"].items())
    return f"{ms} | onnxruntime time / provider time: {ratios}"


def _cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and ONNX Runtime (default 2)")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per example (default 50)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved turns per provider (default 9)")
    parser.add_argument("--calls", type=int, default=200,
                        help="timed calls per turn at b1 batch 1 (fewer for larger work)")
    parser.add_argument("--deberta", choices=("small", "base"), default="small", help="ITHP-DeBERTa's backbone shape")
    parser.add_argument("--no-aoti", dest="aoti", action="store_false", help="leave out the AOTInductor packages")
    parser.add_argument("--only", choices=("b1", "deberta"), default=None, help="run one of the two comparisons")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for the results JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime

    record = {
        "command": "python bench/serving_vs_onnxruntime.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": f"CPU {_cpu_name()} ({args.threads} threads)",
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "tokens": args.tokens, "repeats": args.repeats, "load_average_before": os.getloadavg(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }
    with tempfile.TemporaryDirectory(prefix="ithp_fast-vs-ort-") as folder:
        if args.only != "deberta":
            record["b1"] = b1_comparisons(args, folder)
        if args.only != "b1":
            record["ITHP-DeBERTa"] = deberta_comparisons(args, folder)
    record["load_average_after"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    suffix = "" if args.deberta == "small" else "-deberta-base"
    path = os.path.join(args.out, f"cpu-serving-vs-onnxruntime-{datetime.date.today()}{suffix}.json")
    if os.path.exists(path):
        path = path[:-5] + f"-{datetime.datetime.now():%H%M%S}.json"  # never overwrite a results file
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``ithp-fast serve``: a checkpoint behind an HTTP endpoint, with dynamic batching.

    ithp-fast serve --checkpoint DIR [--host 127.0.0.1] [--port 8000] [--device cpu|cuda]
                    [--max-batch-size 32] [--max-wait-ms 5] [--quantize none|int8] [--runtime onnxruntime|torch]
"""

from __future__ import annotations

import argparse
import os
import sys

from ..serving.quantize import QUANTIZE
from .errors import CommandError, one_line_errors, user_error

DESCRIPTION = """\
Serve a trained ITHP-DeBERTa checkpoint over HTTP: POST /predict with {"texts": [...]} or {"text": "..."}
returns one sentiment score per text (ITHP's posterior mean) and which texts were cut to the model's
max_seq_length tokens; GET /health is 200 once the model is warm (503 while warming up or shutting down);
GET /metadata says what is served; GET /docs and /openapi.json give the schema.

Concurrent requests are batched: a batch takes up to --max-batch-size texts, and waits at most
--max-wait-ms for more when requests arrive together (a single caller never waits). On the CPU the
model runs in ONNX Runtime: it is exported once and kept beside the checkpoint (CHECKPOINT.onnx-cache/,
keyed by the checksum of its files), so later starts are quick; a batch's texts run in groups of similar
length where the padding saved outweighs the runs added (both costs timed at start). --quantize int8
serves ONNX Runtime's dynamic int8 quantisation of it (faster, scores differ slightly: docs/deployment.md).
On CUDA it runs the model in torch with CUDA graphs (ServingDeberta). SIGTERM (or Ctrl-C) stops taking connections,
answers the requests in flight, then exits. One process serves one device: run replicas behind a load
balancer to scale out. Needs FastAPI and uvicorn: pip install 'ithp_fast[serve]'.
"""

INSTALL = "ithp-fast serve needs FastAPI and uvicorn: pip install 'ithp_fast[serve]'"
DRAIN_SECONDS = 30
"""After SIGTERM, how long the requests in flight may take before the server closes anyway."""
DEFAULT_SPIN = "off"
"""ONNX Runtime's idle threads sleep by default: measured against spinning with and without other load on
the cores (``bench/serve_load.py --compare-spin``; docs/deployment.md, Serving over HTTP)."""


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_arguments(args: argparse.Namespace) -> None:
    for flag, value in (("--max-batch-size", args.max_batch_size), ("--max-texts", args.max_texts),
                        ("--threads", args.threads)):
        if value < 1:
            raise CommandError(f"{flag}: expected a positive number, got {value}")
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port: expected a port number, 0 to 65535, got {args.port}")
    if not args.max_wait_ms >= 0:
        raise CommandError(f"--max-wait-ms: expected a number >= 0, got {args.max_wait_ms}")
    if not os.path.isdir(args.checkpoint):
        raise CommandError(f"--checkpoint: {args.checkpoint} is not a directory")
    if not os.path.isfile(os.path.join(args.checkpoint, "config.json")):
        raise CommandError(f"--checkpoint: {args.checkpoint} holds no config.json; expected a checkpoint directory "
                           f"(ithp-fast train, ithp-fast package or save_pretrained)")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise CommandError(f"--device: expected cpu, cuda or cuda:N, got {args.device!r}")
    if args.device != "cpu" and args.quantize != "none":
        raise CommandError("--quantize: int8 is ONNX Runtime's CPU quantisation; on CUDA serve --quantize none")
    if args.runtime is None:
        args.runtime = "onnxruntime" if args.device == "cpu" else "torch"
    if args.runtime == "onnxruntime" and args.device != "cpu":
        raise CommandError("--runtime: onnxruntime serves on the CPU; on CUDA the runtime is torch")
    if args.runtime == "torch" and args.quantize != "none":
        raise CommandError("--quantize: int8 is ONNX Runtime's; with --runtime torch serve --quantize none")


def say(line: str) -> None:
    print(f"ithp-fast serve: {line}", file=sys.stderr, flush=True)


def cpu_model(args: argparse.Namespace):
    """The checkpoint's ONNX bundle (exported once, cached) in ONNX Runtime: torch is not loaded when cached."""
    from ..serving.app import ServedModel
    from ..serving.bundle import BundleScorer
    from ..serving.onnx_cache import cached_program

    program = cached_program(args.checkpoint, args.quantize, say=say)
    scorer = BundleScorer(program, threads=args.threads, spinning=args.spin == "on")
    per_call, per_token = scorer.calibrate(min(4, args.max_batch_size), repeats=2)
    key = os.path.basename(os.path.dirname(program))
    meta = {"checkpoint": os.path.abspath(args.checkpoint), **_described(scorer.metadata),
            "device": "cpu", "runtime": "onnxruntime", "quantize": args.quantize, "threads": args.threads,
            "run_ms": round(per_call * 1000, 4), "token_ms": round(per_token * 1000, 5)}
    return ServedModel(scorer.score, _name(args.checkpoint, key), scorer.max_tokens, meta)


def torch_model(args: argparse.Namespace):
    """The checkpoint in torch: on CUDA behind ``ServingDeberta``'s buckets and CUDA graphs, on the CPU eager
    (``--runtime torch``, the candidate ONNX Runtime was measured against)."""
    import torch

    from ..serving.app import ServedModel
    from ..serving.deberta import ServingDeberta
    from ..serving.export import bundle_metadata
    from ..serving.onnx_cache import checkpoint_checksum
    from ..serving.text import TextScorer
    from ..tools.predict_command import resolve_device
    from ..training.load import load_checkpoint

    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint, device=device)
    if model.tokenizer is None:
        raise CommandError(f"--checkpoint: {args.checkpoint} carries no tokenizer, so it cannot read text")
    serving = None
    if device.type == "cuda":
        batch_sizes = tuple(b for b in (1, 8) if b < args.max_batch_size) + (args.max_batch_size,)
        tokens = tuple(t for t in (16, 32) if t < model.max_seq_length) + (model.max_seq_length,)
        serving = ServingDeberta(model, batch_sizes=batch_sizes, tokens=tokens)
    scorer = TextScorer(model, batch_size=args.max_batch_size, logits=serving)
    meta = {"checkpoint": os.path.abspath(args.checkpoint),
            **_described(bundle_metadata(model, model.max_seq_length, model.tokenizer)),
            "device": args.device, "runtime": "torch, CUDA graphs" if serving is not None else "torch",
            "quantize": "none", "threads": args.threads if device.type == "cpu" else None}
    return ServedModel(lambda texts: scorer.score(texts, warn=False),
                       _name(args.checkpoint, checkpoint_checksum(args.checkpoint)), scorer.max_tokens, meta)


def _described(metadata: dict) -> dict:
    keep = ("model", "output", "output_range", "inputs", "tokenizer", "ithp_fast_version")
    described = {k: metadata[k] for k in keep if k in metadata}
    if "model" in described:
        described["architecture"] = described.pop("model")
    if "output_range" in described:
        described["output_range"] = [float(v) for v in described["output_range"].split(",")]
    return described


def _name(checkpoint: str, checksum: str) -> str:
    return f"{os.path.basename(os.path.abspath(checkpoint).rstrip(os.sep))}@{checksum[:12]}"


def run_server(app, host: str, port: int, name: str) -> None:
    """uvicorn on ``host``:``port`` until SIGTERM / SIGINT; then ``/health`` says draining while the requests in
    flight finish. ``name``: what is served, for the line said at start."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.serving["status"] = "draining"
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=DRAIN_SECONDS, lifespan="on")
    say(f"serving {name} on http://{host}:{port} (POST /predict; GET /health, /metadata, /docs)")
    Server(config).run()


@one_line_errors("serve")
def serve_command(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        user_error("serve", INSTALL)
        return 2
    args.threads = args.threads or available_cores()
    check_arguments(args)
    from ..serving.app import create_app

    served = cpu_model(args) if args.runtime == "onnxruntime" else torch_model(args)
    app = create_app(served, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                     max_texts=args.max_texts)
    run_server(app, args.host, args.port, args.checkpoint)
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a checkpoint over HTTP, with dynamic batching", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint directory (ithp-fast train, ithp-fast package or save_pretrained)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1; 0.0.0.0 for "
                                                        "every interface)")
    p.add_argument("--port", type=int, default=8000, help="the port (default: 8000)")
    p.add_argument("--device", default="cpu", help="cpu (ONNX Runtime, default) or cuda / cuda:N (CUDA graphs)")
    p.add_argument("--max-batch-size", type=int, default=32, help="texts per batch at most (default: 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch may wait for more concurrent requests (default: 5)")
    p.add_argument("--max-texts", type=int, default=256, help="texts per request at most (default: 256; more: 413)")
    p.add_argument("--runtime", default=None, choices=("onnxruntime", "torch"),
                   help="what runs the model: onnxruntime (the CPU default: exported once, cached) or torch (the "
                        "CUDA default, with CUDA graphs; on the CPU eager, measured slower: see the docs)")
    p.add_argument("--quantize", default="none", choices=QUANTIZE,
                   help="int8: ONNX Runtime's dynamic int8 quantisation (CPU; default: none, float32)")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime's threads (default: the cores this process may use)")
    p.add_argument("--spin", default=DEFAULT_SPIN, choices=("on", "off"),
                   help=f"whether ONNX Runtime's idle threads spin (on) or sleep (off; default: {DEFAULT_SPIN})")
    p.set_defaults(func=serve_command)

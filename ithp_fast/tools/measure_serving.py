"""``python -m ithp_fast.tools.measure_serving``: the timings behind the serving defaults (JSON lines).

On CUDA: the fused encode kernel against the cuBLAS chain per row count (what sets
``ithp_fast.encode.FUSED_KERNEL_MAX_ROWS``), a sweep of the kernel's launch configurations, the
serving wrappers' replay and call times, and ITHP-DeBERTa served. Without CUDA: the CPU
comparison of the reference eval forward against ``encode``.
"""

from __future__ import annotations

import functools
import statistics
from typing import Callable, Optional, Sequence

import torch

from ..encode import chain as chain_path
from ..encode import fused as fused_path
from ..reference.ithp import ITHP as ReferenceITHP
from ..serving.buckets import DEFAULT_TOKENS, WARMUP_CALLS, median_seconds
from ..serving.deberta import ServingDeberta, deberta_logits
from ..serving.encoder import ServingEncoder
from ..serving.graphs import capture_graph


def graphed_seconds(fn: Callable[[], object], device: torch.device, calls_per_graph: int = 20,
                    replays: int = 10) -> float:
    """Seconds per call of ``fn()`` captured ``calls_per_graph`` times in one CUDA graph (median)."""
    graph, _ = capture_graph(fn, warmup=WARMUP_CALLS, stream=torch.cuda.Stream(device), calls=calls_per_graph)
    graph.replay()
    return median_seconds(graph.replay, device, replays) / calls_per_graph


def _sweep_configs(rows: int, hidden: int, sm_count: int):
    """A few launch configurations around the default, for the sweep."""
    from ..kernels.encode_chain import EncodeChainConfig, choose_config

    seen = {choose_config(rows, hidden, sm_count)}
    if rows <= 4096:
        for block_m in (16, 32):
            for splits in (1, 4, 8, 16):
                seen.add(EncodeChainConfig(block_m=block_m, block_h=max(16, min(64, hidden // splits)), splits=splits))
    else:
        large = [(32, 64, 4, 2), (64, 64, 4, 3), (64, 128, 8, 3), (64, 256, 8, 3), (128, 64, 8, 3), (128, 128, 8, 3)]
        for block_m, block_h, num_warps, num_stages in large:
            seen.add(EncodeChainConfig(block_m=block_m, block_h=block_h, splits=1, num_warps=num_warps,
                                       num_stages=num_stages))
    return sorted(seen, key=str)


SWEEP_ROWS = (50, 1600, 51200)


def _emit(record: dict) -> None:
    import json

    print(json.dumps(record), flush=True)


def _deberta_v3_base_config():
    """DeBERTa-v3-base's architecture (random weights: nothing is downloaded)."""
    from transformers import DebertaV2Config

    return DebertaV2Config(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        vocab_size=128100, max_position_embeddings=512, relative_attention=True, position_buckets=256,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
        position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7, hidden_act="gelu",
    )


def measure_cuda(rows_list: Sequence[int] = (50, 1600, 6400, 51200), *, sweep: bool = True,
                 compile_modes: bool = False, deberta: bool = True, deberta_compile: Optional[str] = None) -> None:
    """Print (JSON lines) the timings that choose ``FUSED_KERNEL_MAX_ROWS``, the kernel's split
    and the serving modes, with the reference baselines on the same card. A section that fails
    prints its error and the next one runs."""
    from ..config import ITHPConfig
    from ..model import ITHP

    device = torch.device("cuda", torch.cuda.current_device())
    card = torch.cuda.get_device_name(device)
    torch.manual_seed(0)
    base = ITHP(ITHPConfig(), backend="triton").to(device).eval()
    sections = [(f"encode {d} {p}", functools.partial(_measure_encode, base, d, p, rows_list, sweep, device, card))
                for d, p in [("float32", "ieee"), ("float32", "tf32"), ("bfloat16", "ieee")]]
    if compile_modes:
        sections.append(("encoder compile modes", functools.partial(_measure_modes, base, device, card)))
    if deberta:
        for dtype in (torch.float32, torch.bfloat16):
            measure = functools.partial(_measure_deberta, dtype, deberta_compile, device, card)
            sections.append((f"deberta {dtype}", measure))
    for name, run in sections:
        try:
            with torch.no_grad():
                run()
        except Exception as err:
            _emit(dict(what="error", section=name, error=f"{type(err).__name__}: {err}"[:2000]))
        torch.cuda.empty_cache()


def _measure_encode(base, dtype_name, precision, rows_list, sweep, device, card):
    from ..encode import layers
    from ..kernels import sm_count
    from ..kernels.encode_chain import encode_chain

    dtype = getattr(torch, dtype_name)
    model = base.to(dtype)
    for rows in rows_list:
        x = torch.randn(rows, 768, device=device, dtype=dtype)
        rec = dict(what="encode", card=card, dtype=dtype_name, precision=precision, rows=rows)
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        try:
            rec["reference_encode_us"] = 1e6 * graphed_seconds(lambda: ReferenceITHP.encode(model, x), device)
            rec["chain_us"] = 1e6 * graphed_seconds(lambda: chain_path(model, x), device)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
        rec["fused_default_us"] = 1e6 * graphed_seconds(lambda: fused_path(model, x, precision=precision), device)
        if sweep and precision == "ieee" and rows in SWEEP_ROWS:
            timings = {}
            for cfg in _sweep_configs(rows, 256, sm_count(device)):
                try:
                    timings[str(cfg)] = 1e6 * graphed_seconds(
                        lambda: encode_chain(x, *layers(model), precision=precision, config=cfg), device)
                except Exception as err:  # e.g. a block too large for shared memory
                    rec.setdefault("failed_configs", {})[str(cfg)] = type(err).__name__
            best = min(timings, key=timings.get)
            rec["fused_best_us"], rec["fused_best_config"] = timings[best], best
            rec["fused_configs_us"] = timings
        _emit(rec)
    for batch in (1, 1024):
        server = ServingEncoder(model, batch_sizes=(batch,), precision=precision, clone_output=False)
        x = torch.randn(batch, DEFAULT_TOKENS, 768, device=device, dtype=dtype)
        bucket = server._buckets[batch * DEFAULT_TOKENS]
        _emit(dict(what="serving_encoder", card=card, dtype=dtype_name, precision=precision, batch=batch,
                   tokens=DEFAULT_TOKENS, replay_us=1e6 * median_seconds(bucket.run, device, 50),
                   call_us=1e6 * median_seconds(lambda: server(x), device, 50)))


def _measure_modes(base, device, card):
    server = ServingEncoder(base.float(), batch_sizes=(1, 32, 1024), compile_mode="auto")
    _emit(dict(what="serving_encoder_modes", card=card, seconds=server._runner.candidate_seconds,
               chosen={str(k): v for k, v in server.chosen_modes.items()}))


def _measure_deberta(dtype, compile_mode, device, card):
    from ..model import ITHP
    from ..reference.deberta import ITHPDeberta

    torch.manual_seed(0)
    model = ITHPDeberta(_deberta_v3_base_config(), ithp_cls=ITHP).to(device, dtype).eval()
    ids = torch.randint(1, 1000, (1, DEFAULT_TOKENS), device=device)
    mask = torch.ones_like(ids)
    visual = torch.rand(1, DEFAULT_TOKENS, 47, device=device, dtype=dtype)
    acoustic = torch.rand(1, DEFAULT_TOKENS, 74, device=device, dtype=dtype)
    rec = dict(what="deberta", card=card, dtype=str(dtype).split(".")[-1], tokens=DEFAULT_TOKENS,
               compile_mode=compile_mode)
    rec["b1_forward_eager_us"] = 1e6 * median_seconds(lambda: model(ids, visual, acoustic, mask), device)
    rec["b1_logits_eager_us"] = 1e6 * median_seconds(lambda: deberta_logits(model, ids, mask), device)
    server = ServingDeberta(model, batch_sizes=(1, 8, 32), compile_mode=compile_mode)
    for batch in (1, 8, 32):
        ids_b = torch.randint(1, 1000, (batch, DEFAULT_TOKENS), device=device)
        mask_b = torch.ones_like(ids_b)
        rec[f"b{batch}_served_us"] = 1e6 * median_seconds(lambda: server(ids_b, mask_b), device, 50)
        rec[f"b{batch}_replay_us"] = 1e6 * median_seconds(server._buckets[(batch, DEFAULT_TOKENS)].run, device, 50)
    want = model(ids, visual, acoustic, mask).logits
    rec["b1_max_abs_diff_vs_forward"] = float((server(ids, mask).float() - want.float()).abs().max())
    _emit(rec)


def measure_cpu(batch: int = 32, tokens: int = DEFAULT_TOKENS, repeats: int = 5, calls: int = 20) -> None:
    """Print the CPU comparison: the reference eval forward against ``encode`` (interleaved)."""
    from ..config import ITHPConfig
    from ..model import ITHP

    torch.manual_seed(0)
    model = ITHP(ITHPConfig()).eval()
    ref = ReferenceITHP(ITHPConfig()).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(batch, tokens, 768)
    visual, acoustic = torch.rand(batch, tokens, 47), torch.rand(batch, tokens, 74)
    cpu = torch.device("cpu")
    compiled = torch.compile(functools.partial(chain_path, model), dynamic=False)
    x2d = x.reshape(-1, 768)
    runs = {
        "reference_forward_grad_ms": lambda: ref(x, visual, acoustic),
        "reference_forward_ms": lambda: _no_grad(ref, x, visual, acoustic),
        "reference_encode_ms": lambda: _no_grad(ref.encode, x),
        "encode_ms": lambda: _no_grad(model.encode, x),
        "encode_compiled_ms": lambda: _no_grad(compiled, x2d),
    }
    results = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            run()
            results[name].append(1e3 * median_seconds(run, cpu, calls))
    rec = dict(what="cpu_encode", threads=torch.get_num_threads(), batch=batch, tokens=tokens)
    rec.update({name: statistics.median(v) for name, v in results.items()})
    rec["speedup_vs_reference_forward"] = rec["reference_forward_ms"] / rec["encode_ms"]
    _emit(rec)


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def main() -> None:
    """``python -m ithp_fast.tools.measure_serving``: the CUDA timings (or, without CUDA, the CPU comparison)."""
    import argparse

    parser = argparse.ArgumentParser(description="Timings behind the serving defaults (JSON lines).")
    parser.add_argument("--no-sweep", action="store_true", help="skip the kernel configuration sweep")
    parser.add_argument("--compile-modes", action="store_true", help="time torch.compile modes for the encoder")
    parser.add_argument("--no-deberta", action="store_true")
    parser.add_argument("--deberta-compile", default=None, help="compile mode for the served ITHP-DeBERTa")
    parser.add_argument("--rows", type=int, nargs="*", default=[50, 1600, 6400, 51200])
    args = parser.parse_args()
    if torch.cuda.is_available():
        measure_cuda(args.rows, sweep=not args.no_sweep, compile_modes=args.compile_modes,
                     deberta=not args.no_deberta, deberta_compile=args.deberta_compile)
    else:
        measure_cpu()


if __name__ == "__main__":
    main()

"""GPU time of the encode paths under CUDA-graph replay (no Python launch overhead), per row count.

    python3 scripts/encode_probe.py > encode_probe.jsonl

Prints one JSON line per (dtype, precision, rows): the fused Triton kernel and the cuBLAS chain,
each captured in a CUDA graph and timed with ``triton.testing.do_bench_cudagraph``; plus the
serving wrapper's graph replay and end-to-end call (copy in, replay, slice) at batch 1 and 8,
host overhead included. The numbers set
``FUSED_KERNEL_MAX_ROWS`` in ithp_fast/encode.py.
"""

import json

import torch
from triton.testing import do_bench, do_bench_cudagraph

import ithp_fast
from ithp_fast import encode as enc

torch.manual_seed(0)
base = ithp_fast.ITHP(ithp_fast.ITHPConfig()).cuda().eval()
CASES = ((torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float32, "tf32x3"), (torch.bfloat16, "ieee"))
for dtype, precision in CASES:
    model = base.to(dtype)
    for rows in (50, 200, 1600, 6400):
        x = torch.randn(rows, 768, device="cuda", dtype=dtype)
        rec = dict(dtype=str(dtype).split(".")[-1], precision=precision, rows=rows)
        with torch.inference_mode():
            for name, fn in (("fused", enc.fused), ("chain", enc.chain)):
                kwargs = dict(precision=precision) if name == "fused" else {}
                try:
                    rec[f"{name}_graph_us"] = 1e3 * do_bench_cudagraph(lambda: fn(model, x, **kwargs), rep=30)
                except Exception as err:  # report, keep going
                    rec[f"{name}_error"] = repr(err)[:200]
        print(json.dumps(rec), flush=True)
    base = base.float()
with torch.inference_mode():
    for batch in (1, 8):
        server = ithp_fast.ServingEncoder(base, batch_sizes=(batch,), clone_output=False)
        x = torch.randn(batch, 50, 768, device="cuda")
        bucket = server._buckets[batch * 50]
        print(json.dumps(dict(what="serving", batch=batch,
                              replay_us=1e3 * do_bench(bucket.run, rep=30),
                              call_us=1e3 * do_bench(lambda: server(x), rep=30))), flush=True)

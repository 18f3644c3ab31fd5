"""GPU time of the fused TCMax kernels per launch configuration, under CUDA-graph replay.

    python3 scripts/tcmax_probe.py > tcmax_probe.jsonl

Prints one JSON line per (B, C, block_b, block_c, splits): the forward alone and forward +
backward (gradients of the three losses' sum w.r.t. both logits), each captured in a CUDA graph and
timed with ``triton.testing.do_bench_cudagraph``, with the bandwidth those times mean against
reading the logits once (forward) or reading them and writing their gradients once (both).
``"default"`` marks the configuration ``ithp_fast/kernels/tcmax.py`` picks on its own; the fastest line per
size is what its launch heuristic should pick.
"""

import json

import torch
from triton.testing import do_bench_cudagraph

from ithp_fast.kernels.tcmax import tcmax_factorised
from ithp_fast.kernels.tcmax_triton import _launch_config

SIZES = ((4096, 1000), (1024, 100), (256, 10))
BLOCKS = ((None, None), (32, 64), (64, 64), (128, 32), (16, 128))
SPLITS = (None, 8, 16, 32, 64)


def main() -> None:
    device = torch.device("cuda")
    for B, C in SIZES:
        g = torch.Generator(device=device).manual_seed(B + C)
        logits = [torch.randn(B, C, device=device, generator=g, requires_grad=True) for _ in range(2)]
        labels = torch.randint(0, C, (B,), device=device, generator=g)
        logit_bytes = sum(L.numel() * L.element_size() for L in logits)
        read = logit_bytes + labels.numel() * labels.element_size()  # as bench/bench_tcmax.py counts
        for block_b, block_c in BLOCKS:
            for splits in SPLITS:
                launch = dict(block_b=block_b, block_c=block_c, splits=splits)
                resolved = _launch_config(B, C, device, **launch)
                rec = dict(B=B, C=C, block_b=resolved[0], block_c=resolved[1], splits=resolved[3],
                           default=block_b is None and splits is None)

                def forward():
                    with torch.no_grad():
                        return tcmax_factorised(logits, labels, backend="triton", **launch)

                def both():
                    losses = tcmax_factorised(logits, labels, backend="triton", **launch)
                    return torch.autograd.grad(losses.sum(), logits)

                try:
                    rec["forward_us"] = 1e3 * do_bench_cudagraph(forward, rep=20)
                    rec["forward_GBps"] = read / rec["forward_us"] / 1e3
                    rec["fwd_bwd_us"] = 1e3 * do_bench_cudagraph(both, rep=20)
                    rec["fwd_bwd_GBps"] = (read + logit_bytes) / rec["fwd_bwd_us"] / 1e3
                except Exception as err:  # report, keep going
                    rec["error"] = repr(err)[:200]
                print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()

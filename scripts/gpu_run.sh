#!/usr/bin/env bash
# One GPU session, start to end: every test on the GPU, the benchmark suite, the encode and TCMax probes.
# Results and logs go under $OUT: eight files (tests.log, failures.txt, bench.log, bench/{json,md,png},
# encode_probe.jsonl, tcmax_probe.jsonl), the most the device tool brings back.
#   OUT=/tmp/gpu bash scripts/gpu_run.sh
# STEPS picks the steps (default: tests,bench,encode,tcmax, up to 660 s with the default time limits; one device
# command may run 600 s, so split it there, e.g. STEPS=tests, then STEPS=bench,encode,tcmax,profile).
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
STEPS=",${STEPS:-tests,bench,encode,tcmax},"
step() { [[ "$STEPS" == *",$1,"* ]]; }

# 1. Tests on CUDA (Triton-on-CPU cases skip when the interpreter is off); xdist spreads the
#    CPU-bound ones. The whole suite took over 200 s on an H100 machine with 14 workers; each
#    failure's traceback is appended to failures.txt as it happens, so a cut-off run keeps them.
step tests && { ITHP_TEST_FAILURE_LOG="$OUT/failures.txt" timeout "${TEST_TIMEOUT:-300}" python3 -m pytest tests -q \
    -p no:cacheprovider -n 14 --timeout 240 ${TEST_ARGS:-} > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; grep -E "passed|failed" "$OUT/tests.log" | tail -3; grep "^====" "$OUT/failures.txt" 2>/dev/null | sort -u; }

# 2. The benchmark suite: bench/results-style JSON, Markdown table and PNG chart.
step bench && { mkdir -p "$OUT/bench"; timeout "${BENCH_TIMEOUT:-210}" python3 -m ithp_fast bench --out "$OUT/bench" -- -q -p no:cacheprovider \
    ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; tail -5 "$OUT/bench.log"; cat "$OUT"/bench/*.md 2>/dev/null | cut -c1-150; }

# 3. Encode: GPU time of the fused kernel and the cuBLAS chain per row count (sets FUSED_KERNEL_MAX_ROWS).
step encode && { timeout "${PROBE_TIMEOUT:-60}" python3 scripts/encode_probe.py > "$OUT/encode_probe.jsonl" 2>&1
echo "encode probe rc=$?"; }

# 4. TCMax: GPU time of the fused kernels per launch configuration (tunes ithp_fast/kernels/tcmax.py).
step tcmax && { timeout "${TCMAX_PROBE_TIMEOUT:-90}" python3 scripts/tcmax_probe.py > "$OUT/tcmax_probe.jsonl" 2>&1
echo "tcmax probe rc=$?"; }

# 5. Where the training step's GPU time goes: torch.profiler's busiest kernels, eager fast path,
#    batch 32 x 50 (kernel times match a graph replay's; launch gaps do not). Printed here only.
step profile && { for workload in train forward; do
    timeout 60 python3 -m ithp_fast profile --workload "$workload" --steps 10 --rows 30 \
        --trace "/tmp/ithp-profile-$workload.json" 2>&1 | tail -40; done; }

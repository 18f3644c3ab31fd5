#!/usr/bin/env bash
# One GPU session, start to end: every test on the GPU, the benchmark suite, the encode probe.
# Results and logs go under $OUT (at most 8 files come back from the device tool).
#   OUT=/tmp/gpu bash scripts/gpu_run.sh
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.txt"

# 1. Tests on CUDA (Triton-on-CPU cases skip when the interpreter is off); xdist spreads the
#    CPU-bound ones. The whole suite took over 200 s on an H100 machine with 14 workers; each
#    failure's traceback is appended to failures.txt as it happens, so a cut-off run keeps them.
ITHP_TEST_FAILURE_LOG="$OUT/failures.txt" timeout "${TEST_TIMEOUT:-300}" python3 -m pytest tests -q \
    -p no:cacheprovider -n 14 --timeout 240 ${TEST_ARGS:-} > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; grep -E "passed|failed" "$OUT/tests.log" | tail -3; grep "^====" "$OUT/failures.txt" 2>/dev/null | sort -u

# 2. The benchmark suite: bench/results-style JSON, Markdown table and PNG chart.
mkdir -p "$OUT/bench"
timeout "${BENCH_TIMEOUT:-210}" python3 -m ithp_fast.cli bench --out "$OUT/bench" -- -q -p no:cacheprovider \
    ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; tail -5 "$OUT/bench.log"; cat "$OUT"/bench/*.md 2>/dev/null | cut -c1-150

# 3. Encode: GPU time of the fused kernel and the cuBLAS chain per row count (sets FUSED_KERNEL_MAX_ROWS).
timeout "${PROBE_TIMEOUT:-60}" python3 scripts/encode_probe.py > "$OUT/encode_probe.jsonl" 2>&1
echo "probe rc=$?"

#!/usr/bin/env bash
# One GPU session, start to end: every test on the GPU, the benchmark suite, the encode sweep.
# Results and logs go under $OUT (at most 8 files come back from the device tool).
#   OUT=/tmp/gpu bash scripts/gpu_run.sh
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.txt"

# 1. Tests on CUDA (Triton-on-CPU cases skip when the interpreter is off); xdist spreads the CPU-bound ones.
timeout "${TEST_TIMEOUT:-150}" python3 -m pytest tests -q -p no:cacheprovider -n 8 --timeout 120 \
    ${TEST_ARGS:-} > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; grep -E "FAILED|ERROR|passed|failed" "$OUT/tests.log" | tail -25

# 2. The benchmark suite: bench/results-style JSON, Markdown table and PNG chart.
mkdir -p "$OUT/bench"
timeout "${BENCH_TIMEOUT:-210}" python3 -m ithp_fast.cli bench --out "$OUT/bench" -- -q -p no:cacheprovider \
    ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; tail -5 "$OUT/bench.log"; cat "$OUT"/bench/*.md 2>/dev/null | cut -c1-150

# 3. Encode: fused-kernel vs cuBLAS-chain threshold and serving modes.
timeout "${SWEEP_TIMEOUT:-60}" python3 -m ithp_fast.inference --no-deberta > "$OUT/encode_timings.jsonl" 2>&1
echo "sweep rc=$?"

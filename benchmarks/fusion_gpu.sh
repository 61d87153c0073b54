#!/usr/bin/env bash
# The fusion decoder on a GPU machine, as one prepared call of the device tool:
#
#   bash benchmarks/fusion_gpu.sh [fusion_bench.py options]
#
# (A dry run anywhere: PYTHON=.venv/bin/python bash benchmarks/fusion_gpu.sh --device cpu
# --tiny --steps 8 --batches 1 2.)
# It needs only python3 with torch and transformers (nothing is installed). It writes
# into $OUT (the device tool's output folder; a temporary folder otherwise):
#   card.txt                 the card and the versions
#   bench.log, fusion_bench_gpu.json
#                            benchmarks/fusion_bench.py --preset gpu --check: graphs give
#                            eager's tokens, then the timings (dynamic, static, graphs)
#   pytest.log               the fusion property tests on both engines (on this
#                            machine's CPU), when pytest is installed there
# Exit status: the benchmark's (1 when a check found different tokens).
set -uo pipefail
python=${PYTHON:-python3}
cd "$(dirname "$0")/.."
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
} > "$out/card.txt" 2>&1
cat "$out/card.txt"
timeout "${BENCH_TIMEOUT_S:-420}" $python benchmarks/fusion_bench.py --preset gpu --check \
    --repeats "${REPEATS:-3}" --out "$out/fusion_bench_gpu.json" "$@" 2>&1 | tee "$out/bench.log"
status=${PIPESTATUS[0]}
if $python -c 'import pytest' 2>/dev/null; then
    timeout "${TEST_TIMEOUT_S:-150}" $python -m pytest -q \
        -p no:cacheprovider tests/experts/fusion --ignore=tests/experts/fusion/test_expert.py \
        > "$out/pytest.log" 2>&1
    echo "property tests (both engines): exit $? ($(tail -n 1 "$out/pytest.log"))"
else
    echo "pytest is not installed here: property tests not run" | tee "$out/pytest.log"
fi
echo "outputs in $out"
exit "$status"

#!/usr/bin/env bash
# On a lent GPU machine (after scripts/gpu_bundle.sh here): CUDA correctness checks and the engine benchmarks of
# docs/speed.md "What to run on a GPU". Results go to $OUT (the device tool brings them back). Two stages, each well
# inside one 10-minute device call:
#   eager     nvidia-smi, benchmarks/cuda_check.py (incl. CUDA graphs), naive vs engine fp32 and bf16, 512 + 1024
#   compiled  the target row: 4 modalities @1024, bf16, torch.compile max-autotune
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-eager}
out=${OUT:-/tmp/memsam_gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/memsam_site .device/wheels/*.whl || exit 1
export PYTHONPATH="$PWD/.device/site:/tmp/memsam_site:$PWD" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
bench() { python3 benchmarks/bench_engine.py --device cuda "$@" 2>&1 | grep -E '^(#|\|)|Error'; }
case "$stage" in
  eager)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
    python3 benchmarks/cuda_check.py 2>&1 | grep -E '^(#|PASS|FAIL)|Error' | tee "$out/cuda_check.txt"
    bench --sizes 512 1024 --repeats 20 --warmup 3 | tee "$out/engine_fp32.md"
    bench --sizes 512 1024 --repeats 20 --warmup 3 --precision bf16 | tee "$out/engine_bf16.md"
    ;;
  compiled)
    bench --sizes 1024 --modalities 4 --repeats 50 --warmup 5 --precision bf16 --compile --compile-mode max-autotune \
      | tee "$out/engine_bf16_max_autotune.md"
    ;;
  *) echo "usage: gpu_check.sh eager|compiled" >&2; exit 2 ;;
esac

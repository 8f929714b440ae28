#!/usr/bin/env bash
# Every GPU measurement of docs/speed.md and docs/training.md, for one short session on a lent GPU machine (after
# scripts/gpu_bundle.sh here; with the device tool: run(command="bash benchmarks/gpu_session.sh engine ...",
# carry=[".device"])). On any CUDA machine with the project installed, .device/ may be absent.
#
#   bash benchmarks/gpu_session.sh [STAGE ...]   default: engine-eager engine profile cuda-tests training baseplus compiled
#
# Stages, in the order given; one whose time limit would pass the session deadline (GPU_DEADLINE_S, default 540 s
# from the start) is skipped and says so. Outputs under $OUT (default /tmp/memsam_gpu): log.txt (every table and
# the tests' output), training.jsonl, profile_*.json, trace_*.json.gz.
#   engine-eager   naive vs eager engine (no CUDA graphs), fp32 and bf16, 1-4 modalities at 512 and 1024 (hiera tiny)
#   engine         naive vs engine with CUDA graphs (the default), bf16 sweep + fp32 at 1024 x4
#   profile        torch.profiler of one bf16 set at 1024 x4 with CUDA graphs (profile-eager: without)
#   cuda-tests     pytest -m cuda (engine = naive, flash attention, pinned upload, CUDA graphs, AMP, resume, NCCL)
#   training       hiera tiny bf16 under torchrun (NCCL), base+ bf16, tiny fp16+GradScaler and fp32, at 1024
#                  (TRAIN_ITERS for the first, TRAIN_ITERS_OTHERS for the rest; default 100 each)
#   baseplus       hiera base+ (the paper's model), 1024, 4 modalities: naive fp32 vs engine bf16
#   compiled       engine bf16 + torch.compile reduce-overhead, then max-autotune, 1024, 4 modalities (slow compile)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/memsam_gpu}
mkdir -p "$out"
log="$out/log.txt"
start=$(date +%s)
deadline=${GPU_DEADLINE_S:-540}
mkdir -p /tmp/memsam_site
ln -sfn "$PWD/training" /tmp/memsam_site/memsam_training  # training/ is imported as memsam_training (setup.py)
if [ -d .device ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/memsam_site .device/wheels/*.whl || exit 1
  export PYTHONPATH="$PWD/.device/site:/tmp/memsam_site:$PWD"
else
  export PYTHONPATH="/tmp/memsam_site:$PWD"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore TORCHINDUCTOR_CACHE_DIR=/tmp/memsam_inductor
say() { echo "$*" | tee -a "$log"; }
# stage LIMIT_S COMMAND...: run with a time limit, unless it would end after the deadline; tables to the log
stage() {
  local limit=$1; shift
  local elapsed=$(( $(date +%s) - start ))
  if (( elapsed + limit > deadline )); then
    say "# SKIPPED (t=${elapsed}s, needs up to ${limit}s, deadline ${deadline}s): $*"
    return
  fi
  say "## t=${elapsed}s: $*"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | grep -vE 'Warning|warn\(|^\s*$' | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  (( rc == 0 )) || say "# EXIT $rc after $(( $(date +%s) - start - elapsed ))s: $*"
}
bench="python3 benchmarks/bench_engine.py --device cuda"
train="python3 benchmarks/bench_training.py --json $out/training.jsonl"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$log"
python3 -c "import torch, sys; print('# torch', torch.__version__, 'CUDA', torch.version.cuda, 'python', sys.version.split()[0])" | tee -a "$log"
for name in "${@:-engine-eager engine profile cuda-tests training baseplus compiled}"; do
  for s in $name; do
    case "$s" in
      engine-eager)
        stage 100 $bench --sizes 512 1024 --repeats 20 --warmup 3 --cuda-graphs off
        stage 80 $bench --sizes 512 1024 --repeats 20 --warmup 3 --precision bf16 --cuda-graphs off ;;
      engine)
        stage 70 $bench --sizes 512 1024 --repeats 20 --warmup 3 --precision bf16
        stage 40 $bench --sizes 1024 --modalities 4 --repeats 20 --warmup 3 ;;
      profile)
        stage 40 python3 benchmarks/profile_engine.py --precision bf16 --size 1024 --modalities 4 --cuda-graphs on \
          --trace "$out/trace_graphs_bf16.json.gz" --json "$out/profile_graphs_bf16.json" ;;
      profile-eager)
        stage 60 python3 benchmarks/profile_engine.py --precision bf16 --size 1024 --modalities 4 \
          --trace "$out/trace_eager_bf16.json.gz" --json "$out/profile_eager_bf16.json" ;;
      cuda-tests)
        stage 140 python3 -m pytest -m cuda tests/test_cuda.py -q -s -p no:cacheprovider --timeout=130 ;;
      training)
        stage 100 python3 -m torch.distributed.run --nproc_per_node=1 benchmarks/bench_training.py \
          --json "$out/training.jsonl" --amp bf16 --iters "${TRAIN_ITERS:-100}"
        stage 60 $train --amp bf16 --sam2-config sam2.1_hiera_b+ --iters "${TRAIN_ITERS_OTHERS:-100}"
        stage 45 $train --amp fp16 --iters "${TRAIN_ITERS_OTHERS:-100}"
        stage 45 $train --amp off --iters "${TRAIN_ITERS_OTHERS:-100}" ;;
      baseplus)
        stage 45 $bench --sam2-config sam2.1_hiera_b+ --sizes 1024 --modalities 4 --repeats 10 --warmup 2 \
          --precision bf16 ;;
      compiled)
        stage 200 $bench --sizes 1024 --modalities 4 --repeats 50 --warmup 5 --precision bf16 --compile \
          --compile-mode reduce-overhead
        stage 300 $bench --sizes 1024 --modalities 4 --repeats 50 --warmup 5 --precision bf16 --compile \
          --compile-mode max-autotune ;;
      *) say "unknown stage $s"; exit 2 ;;
    esac
  done
done
say "# done in $(( $(date +%s) - start ))s"

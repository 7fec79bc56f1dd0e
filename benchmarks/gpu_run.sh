#!/usr/bin/env bash
# Meta-training on one GPU: the throughput benchmark and the full default run, numbers to $OUT.
#
#   bash benchmarks/gpu_run.sh bench   # ~5 min: bench_meta_train at 1,024 / 4,096 / 16,384
#                                      #   devices x 1 / 4 seeds (one shard)
#   bash benchmarks/gpu_run.sh train   # experiments/configs/default.py (4,096 x 300, K drawn
#                                      #   in 3..20), $SEEDS seeds at once (default 2); K = 10
#                                      #   alone took 221 s for 4 seeds on an H200 (0.2.0)
#   bash benchmarks/gpu_run.sh all     # both (over 10 minutes: two device calls are safer)
#
# Run from the repository root. Writes (at most 8 files, for the device tool):
#   $OUT/env.txt        nvidia-smi, python, jax and its devices, what was installed
#   $OUT/bench.txt      the benchmark's table;  $OUT/bench.json  every result
#   $OUT/train.txt      the run's last lines, wall time, seconds per update (from metrics)
#   $OUT/default_${SEEDS}seeds.tar.gz   the trained workdir (config, checkpoints, metrics, curves)
# Data: $HWNAS_DATA_DIR, else .devdata/nb201 (a copy of the bundle carried to the machine).
# Every step has its own timeout and the script goes on after a failure. Without the
# benchmark bundle ($HWNAS_DATA_DIR) the embedded defaults are used: the same work.
# JAX with CUDA: the installed one if it sees a GPU, else `pip install "jax[cuda12]"`
# (needs a registry), else wheels carried in .whl/ (see /work/.library/device/README.md).
set -u
MODE=${1:-all}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD:/tmp/site:${PYTHONPATH:-}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # peak memory per worker, not 75% of the card
if [ -z "${HWNAS_DATA_DIR:-}" ] && [ -d .devdata/nb201 ]; then
  export HWNAS_DATA_DIR="$PWD/.devdata/nb201"
fi
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-540}
SEEDS=${SEEDS:-2}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-330}
BENCH_SIZES=${BENCH_SIZES:-1024,4096,16384}
PY=${PYTHON:-python3}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/env.txt"; }

gpu_ok() { timeout 120 "$PY" -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null; }

setup() {
  { nvidia-smi 2>&1 | head -15; "$PY" --version; uptime; } >> "$OUT/env.txt"
  if [ "${GPU_RUN_INSTALL:-1}" = 1 ] && ! gpu_ok && ! ls .whl/jax*.whl >/dev/null 2>&1; then
    log "no GPU backend in the installed JAX: pip install jax[cuda12]"
    timeout 300 "$PY" -m pip install -q "jax[cuda12]" >> "$OUT/env.txt" 2>&1 || log "pip failed"
  fi
  if ls .whl/*.whl >/dev/null 2>&1 && ! { gpu_ok && "$PY" -c "import ml_collections" 2>/dev/null; }; then
    log "installing the carried wheels of .whl/"
    timeout 300 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl >> "$OUT/env.txt" 2>&1 || log "wheels failed"
  fi
  for module in ml_collections absl flax optax chex tqdm matplotlib; do
    "$PY" -c "import $module" 2>/dev/null || log "MISSING python module: $module"
  done
  timeout 120 "$PY" -c "import jax, jaxlib; print('jax', jax.__version__, jaxlib.__version__, jax.devices())" \
    >> "$OUT/env.txt" 2>&1
  gpu_ok && log "GPU backend: yes" || log "GPU backend: NO (numbers below are not GPU numbers)"
}

bench() {
  log "bench start"
  # K = 10, told nothing, single-step minibatches: the workload of the earlier GPU tables
  # (default.py's K in 3..20 plays twice the steps an episode).
  timeout "$BENCH_TIMEOUT" "$PY" -m benchmarks.bench_meta_train --batch_sizes="$BENCH_SIZES" --seeds=1,4 \
    --shards=1 --repeats=3 --timeout=150 --json_out="$OUT/bench.json" \
    --config.num_probes_range="()" --config.noise_told_share=0 \
    --config.episode_minibatches=False 2>&1 \
    | grep -v '^JSON' | tee "$OUT/bench.txt"
  log "bench end (exit ${PIPESTATUS[0]})"
}

train() {
  log "train start: default.py, $SEEDS seeds"
  local workdir=/tmp/gpu_default_${SEEDS}seeds start end
  start=$(date +%s)
  timeout "$TRAIN_TIMEOUT" "$PY" -m experiments.meta_train --config=experiments/configs/default.py \
    --config.num_seeds="$SEEDS" --workdir="$workdir" --fresh ${TRAIN_FLAGS:-} > /tmp/gpu_train.log 2>&1
  local status=$?
  end=$(date +%s)
  {
    echo "default.py, $SEEDS seeds: exit $status, wall $((end - start)) s (compile and evaluation included)"
    tail -c 3000 /tmp/gpu_train.log | tr '\r' '\n' | tail -n 12
    "$PY" - "$workdir" <<'EOF'
import glob, json, statistics, sys
for path in sorted(glob.glob(sys.argv[1] + "/seed_*/metrics.jsonl")):
  rows = [json.loads(line) for line in open(path)]
  if not rows:
    continue
  seconds = [r["seconds"] for r in rows]
  print(f"{path}: {len(rows)} updates; s/update: first {seconds[0]:.2f}, median of the rest "
        f"{statistics.median(seconds[1:] or seconds):.3f}, sum {sum(seconds):.1f}; "
        f"last score {rows[-1].get('score', float('nan')):.3f}, "
        f"eval {rows[-1].get('eval_score', float('nan')):.3f} vs random "
        f"{rows[-1].get('random_score', float('nan')):.3f}")
  break  # every seed's row holds the same (vmapped) seconds
EOF
  } | tee "$OUT/train.txt"
  tar -czf "$OUT/default_${SEEDS}seeds.tar.gz" -C "$(dirname "$workdir")" \
    "$(basename "$workdir")" && log "workdir saved to default_${SEEDS}seeds.tar.gz"
  log "train end"
}

setup
case "$MODE" in
  bench) bench ;;
  train) train ;;
  all) bench; train ;;
  train_bench) train; bench ;;
  *) echo "usage: $0 [bench|train|all|train_bench]"; exit 2 ;;
esac

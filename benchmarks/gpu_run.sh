#!/usr/bin/env bash
# The accelerator benchmarks in one pass, each under its own time limit, so that one slow
# case cannot take the others' time: the ensemble ones (about 330 s of limits), then, with
# ALL=1, every other one (another 350 s). Run from the repository root:
#   OUT=/tmp/gpu bash benchmarks/gpu_run.sh        # ALL=1 OUT=/tmp/gpu ... for all
# Each benchmark's output goes to $OUT/<name>.txt (unbuffered, so a run cut off by its
# limit keeps what it printed).
set -u
OUT=${OUT:-/tmp/jaxlearn-gpu}
mkdir -p "$OUT"
export PYTHONPATH=".:${EXTRA_PYTHONPATH:-}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import jax, optax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, 'optax', optax.__version__, jax.devices())"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" python -u "$@" > "$OUT/$name.txt" 2>&1
  echo "exit $? after $((SECONDS - t0)) s" >> "$OUT/$name.txt"
  tail -n 25 "$OUT/$name.txt"
}

run ensemble "${LIMIT_ENSEMBLE:-90}" benchmarks/ensemble.py --gpu --sizes 1,8,64,512 --epochs 10 --repeats 3
# The same, each case timed right after an untimed run of itself (a repeated call).
run ensemble_warm "${LIMIT_ENSEMBLE_WARM:-120}" benchmarks/ensemble.py --gpu --sizes 1,8,64,512 --epochs 10 --repeats 3 --warm 1
# Where an ensemble call's time goes (per epoch against fixed; program alone against the
# whole call), each case timed warm.
run ensemble_anatomy "${LIMIT_ANATOMY:-80}" benchmarks/ensemble_anatomy.py --sizes 1,512 --repeats 3 --packs auto,off --program --warm 1
# A profiler trace of both contenders at N = 1: which events make fit_ensemble's fixed cost.
run ensemble_profile "${LIMIT_PROFILE:-40}" benchmarks/ensemble_anatomy.py --sizes 1 --short 5 --long 6 --repeats 3 --packs auto --profile
# The other benchmarks (update rules, search, gradient check, training) with ALL=1.
[ "${ALL:-0}" = 1 ] || exit 0
run search "${LIMIT_SEARCH:-80}" benchmarks/search.py --gpu
# The 2000-leaf tree without optax's tree path (whose compile alone takes about 36 s there):
# packed against one flat buffer, the GPU goal.
run update_step_2000 "${LIMIT_UPDATE_2000:-30}" benchmarks/update_step.py --gpu --rules adam,momentum --skip-mlp --cases "2000 leaves" --paths flat,packed
run update_step "${LIMIT_UPDATE:-100}" benchmarks/update_step.py --gpu --rules adam,momentum --skip-mlp --cases "one leaf,200 leaves,one leaf 100M"
run gradcheck "${LIMIT_GRADCHECK:-80}" benchmarks/gradcheck.py --gpu
run train "${LIMIT_TRAIN:-60}" benchmarks/train.py --gpu --repeats 3

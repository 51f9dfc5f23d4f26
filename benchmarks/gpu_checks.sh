#!/usr/bin/env bash
# The checks that only a CUDA GPU can run, in one pass (run by hand; about 10 minutes on an H200).
#
#     bash benchmarks/gpu_checks.sh [OUT]     # each step's log in OUT (default build/gpu)
#     STEPS="tests bench" bash benchmarks/gpu_checks.sh
#
# PY picks the Python (default: .venv/bin/python if there is one, else python3); it needs the
# requirements (diffusers; papermill for the last step). The steps, in order (STEPS names a subset):
#   tests  the CUDA tests, skipped without a GPU: graphed training steps against eager ones, and the
#          mini model's graphed one- and two-phase (half-size first) runs resumed on the CPU
#   bench  training throughput, diffnb's loop against the textbook loop at the write-up's flow-matching
#          size (D = 64, 60,000 images; target: at least 5x)
#   mini   the shipped mini recipe trained on the GPU, timed; the model goes to OUT/mini-if, never data/
#   partb  Part B's seed profile (the write-up's settings) on the pack's rendered digits, timed
#          (target: under 3 minutes)
# The last lines say how each step ended; the script exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
STEPS=${STEPS:-"tests bench mini partb"}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DIFFNB_BUILD="$OUT/build"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device is visible to $PY (torch.cuda.is_available() is False): these checks need one" >&2
    exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name())" | tee "$OUT/device.txt"

declare -A RESULT
run_step() {   # name, command...: runs it, logs to OUT/name.log, keeps its exit status and wall time
    local name=$1; shift
    case " $STEPS " in *" $name "*) ;; *) return ;; esac
    echo "== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    RESULT[$name]="exit $rc after $((SECONDS - start)) s"
    echo "== $name: ${RESULT[$name]}"
}

run_step tests "$PY" -m pytest -o addopts="" -p no:cacheprovider -q -rs tests/test_train.py tests/test_mini.py -k cuda
run_step bench "$PY" benchmarks/bench_train_loop.py --device cuda --num-hiddens 64 --images 60000
run_step mini "$PY" -m diffnb.mini.model train --device cuda --out "$OUT/mini-if"
run_step partb "$PY" -m diffnb.pack --only B -p profile seed -p data synthetic -p device cuda --out "$OUT/pack-seed"

for name in $STEPS; do echo "$name: ${RESULT[$name]:-not run (unknown step?)}"; done | tee "$OUT/summary.txt"
! grep -qv ": exit 0 " "$OUT/summary.txt"

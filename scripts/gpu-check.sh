#!/usr/bin/env bash
# The GPU path in one call, in under 5 minutes on one H100/H200: correctness first, then speed, each figure
# beside today's baseline in the same run (scripts/gpu_check.py says what each step measures).
#
#   scripts/gpu-check.sh OUT_DIR [PHOTOS [ARGS...]]  on a GPU machine (DALI reached through the wheels tool);
#                                                    ARGS go to gpu_check.py, e.g. --steps lrn,dali
#   scripts/gpu-check.sh --cpu-smoke OUT_DIR     every step that needs no CUDA, tiny, on the CPU (the tests run it)
#
# PHOTOS: a prepared dataset of real photos (e.g. the 1000 ImageNet samples prepared with 'alexnet
# prepare-imagenet' and carried along); without it the demo data stands in. Writes OUT_DIR/gpu-check.md,
# OUT_DIR/gpu-check.json and OUT_DIR/gpu-tests.log. Copy gpu-check.json to docs/gpu/DATE-CARD-gpu-check.json:
# the next run compares its figures against the newest such file.
set -uo pipefail
smoke=()
if [ "${1:-}" = --cpu-smoke ]; then smoke=(--cpu-smoke); shift; fi
out=${1:?usage: scripts/gpu-check.sh [--cpu-smoke] OUT_DIR [PHOTOS [ARGS...]]}
photos=${2:-}
shift $(( $# < 2 ? $# : 2 ))
limit=${GPU_CHECK_SECONDS:-290}  # the whole check, pytest included: under 5 minutes
mkdir -p "$out" && out=$(cd "$out" && pwd)
[ -z "$photos" ] || photos=$(cd "$photos" && pwd) || exit 1
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

# DALI first: on the GPU machine it arrives through the wheels tool, and nothing else works without it.
"$python" -c "import nvidia.dali, torch; print('DALI', nvidia.dali.__version__, 'torch', torch.__version__)" || exit 1

status=0
if [ ${#smoke[@]} -eq 0 ] && [ "${SKIP_GPU_TESTS:-0}" != 1 ]; then
  # Correctness of every hand-off from DALI to torch (stream-ordered outputs, devices, pixels vs the CPU).
  timeout 150 "$python" -m pytest -m gpu -q -rA -s -p no:cacheprovider tests/data/test_gpu.py \
    tests/models/test_gpu_speed.py > "$out/gpu-tests.log" 2>&1 \
    || { echo "gpu tests failed: $out/gpu-tests.log" >&2; status=1; }
  tail -1 "$out/gpu-tests.log"
fi
budget=$(( limit - SECONDS ))  # what pytest left of the limit (SECONDS counts from this script's start)
"$python" scripts/gpu_check.py "$out" ${photos:+--photos "$photos"} --budget "$budget" "${smoke[@]}" "$@" \
  || status=1
exit $status

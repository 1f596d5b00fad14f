#!/usr/bin/env bash
# The GPU check in two calls of under 5 minutes each (scripts/gpu_check.py says what each step measures):
#
#   scripts/gpu-check.sh OUT [PHOTOS] [--call 2 | --steps a,b]   on a GPU machine (DALI through the wheels tool)
#   scripts/gpu-check.sh --cpu-smoke OUT [PHOTOS]                 every step on the CPU, tiny (the tests run it)
#
# PHOTOS: a prepared dataset of real photos (e.g. the 1000 ImageNet samples prepared with 'alexnet
# prepare-imagenet' and carried along); without it the demo data stands in. The plan of both calls is printed
# first; OUT/gpu-check.md and OUT/gpu-check.json are rewritten after every step. GPU_CHECK_SECONDS: a call's
# steps stop after this many seconds (280).
set -uo pipefail
args=()
if [ "${1:-}" = --cpu-smoke ]; then args+=(--cpu-smoke); shift; fi
[ $# -ge 1 ] || { echo "error: usage: scripts/gpu-check.sh [--cpu-smoke] OUT [PHOTOS] [--call 2 | --steps a,b]" >&2; exit 2; }
args+=("$1"); shift
if [ $# -ge 1 ] && [ "${1#--}" = "$1" ]; then args+=(--photos "$1"); shift; fi
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" "${args[@]}" --seconds "${GPU_CHECK_SECONDS:-280}" "$@"

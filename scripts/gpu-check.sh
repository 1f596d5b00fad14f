#!/usr/bin/env bash
# The GPU path in one call: correctness first, then speed. Needs CUDA, torch and DALI. On one H100 the
# first version took 7.3 minutes; this one runs fewer benchmark batches and repeats, the model alone last.
#
#   scripts/gpu-check.sh OUT_DIR [PHOTOS]
#
# PHOTOS: a prepared dataset of real photos for the speed figures (e.g. ImageNet's val images prepared
# with 'alexnet prepare-imagenet'); without it the demo data stands in. Writes OUT_DIR/gpu-check.md and
# OUT_DIR/gpu-check.json (scripts/gpu_report.py), and one log per step. A failed step is reported and
# the next one runs anyway. Steps, in the order that matters most:
#   (a) one batch of every loader kind on the GPU against the CPU pipeline: pytest -m gpu
#   (d) 50 single-gpu steps on the demo data with a mid-run checkpoint; ten-crop eval on GPU and CPU
#   (b) benchmark data (ROI and whole-image decoding); benchmark model --compare for paper, bf16 for owt
#   (c) benchmark train --recipe single-gpu, real and synthetic batches, host syncs per step
#   (e) the hardware JPEG decoder's load during (b), from nvidia-smi
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR [PHOTOS]}
photos=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1
: > "$out/steps.tsv"

python=${PYTHON:-python3}
alexnet=("$python" -m alexnet_cli)

# step NAME SECONDS COMMAND...: run with a time limit, log to OUT_DIR/NAME.log, record status and seconds.
step() {
  local name=$1 limit=$2; shift 2
  local started=$SECONDS status=ok
  echo "== $name" >&2
  timeout "$limit" "$@" > "$out/$name.log" 2>&1 || status="failed (exit $?)"
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - started))" >> "$out/steps.tsv"
  echo "   $status, $((SECONDS - started)) s" >&2
}

decoder_load() {  # (e): the JPEG engines' utilisation, once a second, while the data benchmark runs
  nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.jpeg --format=csv -l 1 > "$out/jpeg-util.csv" 2>&1 &
  echo $!
}

step environment 30 bash -c 'nvidia-smi; '"$python"' -c "import torch, lightning, nvidia.dali as d; \
print(torch.__version__, torch.cuda.get_device_name(0), lightning.__version__, d.__version__)"'

# (a) correctness of every hand-off from DALI to torch
step gpu-tests 240 "$python" -m pytest -m gpu -q -rA -s -p no:cacheprovider tests/test_gpu.py

# (d) a short real run, a mid-run checkpoint, and the paper's ten-crop test on both devices
step demo-data 120 "${alexnet[@]}" prepare-imagenet --demo --out "$work/demo" --quiet
step train-50-steps 240 "${alexnet[@]}" train --recipe single-gpu --data "$work/demo" --out "$work/run" --quiet \
  --set data.batch_size=32 --set trainer.max_steps=50 --set trainer.max_epochs=100 \
  --set trainer.log_every_n_steps=10 --set checkpoint.every_minutes=null \
  --set checkpoint.every_n_train_steps=25 --set checkpoint.keep_last=2 \
  --set model.init=kaiming --set data.normalize=channel --set optim.lr=0.003 --set optim.schedule=cosine \
  --json "$out/train.json"
ls -la "$work/run/checkpoints" > "$out/checkpoints.txt" 2>&1
for device in gpu cpu; do
  step "eval-$device" 180 "${alexnet[@]}" eval --checkpoint "$work/run/checkpoints/last.ckpt" --data "$work/demo" \
    --ten-crop --device "$device" --threads 8 --quiet --json "$out/eval-$device.json" \
    --predictions "$out/predictions-$device.csv"
done

# (b) + (e) speed of the input pipeline and of the model
data=${photos:-$work/demo}
monitor=$(decoder_load)
step data-roi 180 "${alexnet[@]}" benchmark data --data "$data" --recipe single-gpu --batch-size 128 --batches 30 \
  --warmup 5 --repeats 2 --workers 8 --set data.roi_decode=true --quiet --json "$out/data-roi.json"
step data-whole 180 "${alexnet[@]}" benchmark data --data "$data" --recipe single-gpu --batch-size 128 --batches 30 \
  --warmup 5 --repeats 2 --workers 8 --set data.roi_decode=false --quiet --json "$out/data-whole.json"
kill "$monitor" 2>/dev/null
# (c) the training loop: Lightning against a plain loop, real against synthetic data, syncs per step
step train-loop 300 "${alexnet[@]}" benchmark train --recipe single-gpu --data "$data" --steps 40 --warmup 10 \
  --repeats 2 --count-syncs --quiet --json "$out/train-loop.json"

# the model alone last: its figures change least between versions of the tool
step model-paper 240 "${alexnet[@]}" benchmark model --arch paper --device gpu --batch-size 128 --compare \
  --warmup 10 --batches 30 --quiet --json "$out/model-paper.json"
step model-owt 120 "${alexnet[@]}" benchmark model --arch owt --device gpu --batch-size 128 \
  --precision bf16-mixed --warmup 10 --batches 30 --quiet --json "$out/model-owt.json"

"$python" scripts/gpu_report.py "$out"

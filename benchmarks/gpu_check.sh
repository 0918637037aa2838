#!/usr/bin/env bash
# One-shot GPU check for a lent CUDA machine (the device tool), under 10 minutes (call it with timeout_s 600).
# Checks what CPU CI cannot: the device data path on CUDA (tests with the GPU visible), its ms per batch
# against fastai's per-item path, --bs auto's throughput rule, and the speed bars of issue #15:
# fastseg (b) >= 0.95 x the tuned plain loop (c) at bs 8 and at --bs auto, on ISBI x20 (symlinks, 480
# training images) and on a generated 500-image set of 256 px; each row with its model TFLOP/s against
# the card's dense bf16 peak. The CUDA tests first, then the bars, then the extras, each under a timeout.
#
# Usage (device machine, repo root):  bash benchmarks/gpu_check.sh [ISBI_DIR]
#   ISBI_DIR: a copy of ../shared/data/isbi2012-membrane inside the repo (6 MB; default .isbi), carried.
#   .whl/: wheels the machine lacks (fastai, fastcore, fastprogress, fasttransform, fastdownload,
#   plum-dispatch, segmentation_models_pytorch, ...: see /work/.library/device/README.md), carried.
# Writes 8 files to $OUT (or ./gpu_out): summary.txt first (the machine, then every bar and table).
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
ISBI=${1:-.isbi}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
SUMMARY="$OUT/summary.txt"
step() { echo; echo "=== $1 ($(date +%T))"; }
# speed NAME DATA ARGS...: train_speed.py into $OUT/speed_NAME.log, its bars and table into the summary
speed() {
  local name=$1 data=$2; shift 2
  step "train_speed: $name"
  timeout 110 python3 benchmarks/train_speed.py --data "$data" --rounds 2 --epochs 2 "$@" 2>&1 \
    | grep -v "Epoch\|^\s*$\|warn" > "$OUT/speed_$name.log"
  echo "rc=${PIPESTATUS[0]}" >> "$OUT/speed_$name.log"
  { echo; echo "## $name: train_speed.py --data $data $*"; grep -E "^(data|plan|model):|^\| |/\(|rc=" "$OUT/speed_$name.log"; } \
    | tee -a "$SUMMARY"
}

step "machine" | tee "$SUMMARY"
{ nvidia-smi -L; nproc
  python3 -c "import torch,timm,fastai,segmentation_models_pytorch as s;print('torch',torch.__version__,'cuda',torch.cuda.is_available(),torch.cuda.get_device_name(0),'timm',timm.__version__,'fastai',fastai.__version__,'smp',s.__version__)"
} 2>&1 | tee -a "$SUMMARY"

step "tests with CUDA visible: device data path (cpu + cuda cases), device.py"
timeout 60 python3 -m pytest -q -x -p no:cacheprovider tests/train/test_device_data.py tests/test_device.py \
  > "$OUT/tests.log" 2>&1
echo "rc=$?" >> "$OUT/tests.log"
{ echo; echo "## tests"; tail -3 "$OUT/tests.log"; } | tee -a "$SUMMARY"

DEMO=/tmp/demo500
python3 -m fastseg demo-data "$DEMO" --n 500 --size 256 --seed 0 >/dev/null 2>&1 || echo "demo-data failed" | tee -a "$SUMMARY"
if [ -d "$ISBI/images" ]; then
  mkdir -p /tmp/isbi20/images /tmp/isbi20/masks
  for k in $(seq 1 20); do
    for f in "$ISBI"/images/*.png; do
      b=$(basename "$f")
      ln -sf "$(readlink -f "$f")" "/tmp/isbi20/images/${k}_$b"
      ln -sf "$(readlink -f "$ISBI/masks/$b")" "/tmp/isbi20/masks/${k}_$b"
    done
  done
  speed isbi20_bs8 /tmp/isbi20 --bs 8 --loops c,b,bf
  speed isbi20_auto /tmp/isbi20 --bs auto --loops c,b
else
  echo "no ISBI copy at $ISBI: ISBI x20 skipped" | tee -a "$SUMMARY"
fi
speed demo500_bs8 "$DEMO" --bs 8 --loops c,b,bf
speed demo500_auto "$DEMO" --bs auto --loops c,b

step "data path alone: ms per batch (ISBI if present, else the 500-image set)"
DS=$([ -d "$ISBI/images" ] && echo "$ISBI" || echo "$DEMO")
timeout 30 python3 benchmarks/data_speed.py --data "$DS" --batches 20 --rounds 3 > "$OUT/data_speed.log" 2>&1
{ echo; echo "## data_speed.py --data $DS"; grep -E "^\||faster|store built" "$OUT/data_speed.log"; } | tee -a "$SUMMARY"

step "fastseg fit --bs auto --epochs 2 on the 500-image set (the CLI's --bs auto on CUDA)"
timeout 45 python3 -m fastseg fit --data "$DEMO" --bs auto --epochs 2 --lr 1e-3 --weights none --runs-dir /tmp/runs --name gpubs \
  --export /tmp/gpubs.pkl > "$OUT/fit.log" 2>&1
echo "rc=$?" >> "$OUT/fit.log"
{ echo; echo "## fit --bs auto"; grep -iE "batch size|precision|augmentation|data path|rc=" "$OUT/fit.log"; } | tee -a "$SUMMARY"

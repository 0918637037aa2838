#!/usr/bin/env bash
# One-shot GPU check for a lent CUDA machine (the device tool), sized for ~7 minutes.
# Exercises the CUDA-only paths that CPU CI cannot: fp16 + channels_last + cudnn.benchmark in
# `fit`, --bs auto on CUDA, --compile, predict/evaluate/export of a CUDA-trained model, the test
# suite with CUDA visible, and the training-speed benchmark on the GPU.
# Usage (device machine, repo root):  bash benchmarks/gpu_check.sh [ISBI_DIR]
# Logs go to $OUT (or ./gpu_out). Missing pure-Python packages travel as wheels in .whl/.
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
FS="python3 -m fastseg"
step() { echo; echo "=== $1 ($(date +%T))"; }
t() { local s=$(date +%s.%N); "$@"; local rc=$?; echo "[rc=$rc, $(python3 -c "print(round($(date +%s.%N)-$s,1))") s]"; return $rc; }

step "machine"
nvidia-smi -L; nproc
python3 -c "import torch,timm,fastai,segmentation_models_pytorch as s,onnxruntime as o;print('torch',torch.__version__,'cuda',torch.cuda.is_available(),torch.cuda.get_device_name(0),'timm',timm.__version__,'fastai',fastai.__version__,'smp',s.__version__,'ort',o.__version__)"

step "fit --epochs 25 on the demo data (README command 1, GPU: fp16, channels_last, cudnn.benchmark)"
t $FS fit --epochs 25 --name gpu25 --export exports/gpu25.pkl 2>&1 | tee "$OUT/fit25.log" | grep -v "^\s*$" | tail -40
python3 -c "import json;m=json.load(open('runs/gpu25/metrics.json'));print({k:m[k] for k in m if k!='per_class'})" 2>&1 | head -5

step "predict + evaluate + export of the CUDA-trained model"
t $FS predict exports/gpu25.pkl data/images --out /tmp/pred --overlay 2>&1 | tail -4
ls /tmp/pred | head -3; ls /tmp/pred | wc -l
t $FS evaluate exports/gpu25.pkl --data data --json 2>&1 | tail -3
t $FS export exports/gpu25.pkl --format onnx --out /tmp/gpu25.onnx 2>&1 | tail -3
t $FS predict /tmp/gpu25.onnx data/images --out /tmp/pred_onnx 2>&1 | tail -2
python3 - <<'PY'
import numpy as np; from PIL import Image; from pathlib import Path
a=sorted(Path('/tmp/pred').glob('*[!y].png')); same=tot=0
for p in a:
    q=Path('/tmp/pred_onnx')/p.name
    if q.exists(): x,y=np.array(Image.open(p)),np.array(Image.open(q)); same+=(x==y).sum(); tot+=x.size
print(f'pkl(CUDA) vs onnx(ORT) identical pixels: {same/max(tot,1):.5f} over {len(a)} masks')
PY

step "fit --bs auto --compile (3 epochs)"
t $FS fit --epochs 3 --bs auto --compile --lr 1e-3 --name gpucompile --export exports/gpucompile.pkl 2>&1 | tee "$OUT/fit_compile.log" | grep -iv "^\s*$" | tail -15

step "train_speed benchmark on the GPU (ISBI)"
[ -d "$ISBI" ] && t timeout 150 python3 benchmarks/train_speed.py --data "$ISBI" --rounds 2 --epochs 2 2>&1 | tee "$OUT/train_speed.log" | tail -12

step "test suite with CUDA visible"
t timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest.log" | tail -25

#!/usr/bin/env bash
# Speed benchmark (issue 11) on a GPU machine, full configuration: about 3 minutes on one H100.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh     # from the repository root
#
# Needs torch (>= 2.11, with CUDA) and torchvision, numpy, pyyaml, safetensors, tqdm,
# tensorboard and matplotlib importable; no dataset and no network access (synthetic data,
# ResNet-50 with random weights). Writes $OUT/speed_gpu.json and $OUT/speed_gpu.md (after
# every part, so a run cut short still leaves what it measured) and prints the Markdown.
set -euo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'cuda', torch.version.cuda, 'card', torch.cuda.get_device_name(0))"
status=0
timeout "${SPEED_TIMEOUT:-480}" python3 benchmarks/speed.py --out "$OUT/speed_gpu.json" || status=$?
[ -f "$OUT/speed_gpu.md" ] && cat "$OUT/speed_gpu.md"
exit "$status"

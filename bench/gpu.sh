#!/usr/bin/env bash
# The GPU checks, as one script for a GPU host (run from the repository root; uses the host's python3
# with its own torch). Writes JSON files to $OUT (default bench/results/gpu).
#   - the training step's ceiling: ResNet-18 and ResNet-50, bf16 autocast, channels_last
#   - the trainer's pipeline against the torchvision loop on the GPU (target >= 5x)
#   - every preset on the digits (the CUDA path end to end: cache on the device, bf16, evaluation)
set -u
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
# our package without its dependencies (the host has no registry); the GPU checks need only torch and friends
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
python3 bench/train.py --throughput --output "$OUT/train-throughput.json"
python3 bench/train.py --images 2000 --output "$OUT/train.json"  # the preset's 10 epochs
python3 bench/presets.py --output "$OUT/presets.json"
python3 bench/digits.py --out "$OUT/digits.json"

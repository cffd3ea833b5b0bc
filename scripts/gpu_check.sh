#!/usr/bin/env bash
# The GPU figures of issue 22, on a lent GPU machine (the device tool):
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=560)
# .whl holds the UI's wheels for CPython 3.12 (the image has torch but not
# textual, plotext, orjson, msgspec, rich, ...): `bash scripts/gpu_wheels.sh` fetches them here.
# Each step has its own time limit; every figure is written under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, textual; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'textual', textual.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
timeout 90 python3 benchmarks/gpu_syncs.py 2>&1 | tee "$OUT/gpu_syncs.txt"
timeout 470 python3 benchmarks/bench_gpu.py 2>&1 | tee "$OUT/bench_gpu.txt"

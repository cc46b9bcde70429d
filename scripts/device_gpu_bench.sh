#!/usr/bin/env bash
# The GPU check of the speed issue, run ON the lent device machine (never in CI). Prepare here with
# `bash scripts/prepare_device.sh`, then call the device tool once:
#   run(command="bash scripts/device_gpu_bench.sh", carry=[".whl", ".gpudata"], timeout_s=560)
# It writes to $OUT (the files that come back):
#   gpu_vit_h.json  real-size Swin-T Grounding DINO + SAM ViT-H (random weights), 5 bottle images,
#                   CUDA: saa fp32 vs --baseline (ratio, max map diff), bf16 and fp16 reruns with
#                   their map and metric differences, per-stage times, peak CUDA memory
#   metrics.json    pixel metrics on 100 M pixels: ours (CPU sort, CUDA sort) vs scikit-learn
#   log.txt         everything printed
set -uo pipefail
OUT=${OUT:-/tmp/saa_gpu_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 2; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -c "import torch, transformers, groundingdino, segment_anything, pydantic, saa.methods.saa_plus.pipeline; \
print('torch', torch.__version__, torch.cuda.get_device_name(0), '| transformers', transformers.__version__)" \
    || { echo "imports failed"; exit 3; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
timeout 420 python3 scripts/benchmark.py --models realsize --sam vit_h --device cuda --images 5 --baseline \
    --compare-precision bf16,fp16 --image-glob ".gpudata/bottle/test/*/*.png" --cache /tmp/saa_bench \
    --out "$OUT/gpu_vit_h.json"
echo "benchmark exit $?"
timeout 100 python3 scripts/bench_metrics.py --pixels 100000000 --methods ours,ours:cuda,sklearn \
    --out "$OUT/metrics.json"
echo "bench_metrics exit $?"

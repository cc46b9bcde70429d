#!/usr/bin/env bash
# The GPU comparison of issue 23 as ONE command, run on the lent GPU machine (never in CI).
#   here:        bash scripts/prepare_device.sh [--authors PATH]       (wheels, images, the authors' code)
#   device tool: run(command="bash scripts/device_gpu_bench.sh", carry=[".whl", ".gpudata", ".authors"],
#                    timeout_s=560)
#   dry run on the CPU (tiny models, 2 images, bf16 at B=2 only; tests/scripts/test_device_gpu_bench.py runs it):
#                bash scripts/device_gpu_bench.sh --dry-run
#
# On the same random-weight real-size files (Swin-T Grounding DINO 6+6 layers with a BERT-base-sized
# text encoder, SAM ViT-H, wide_resnet50_2; built on the machine, ~3 GB) and the same real MVTec
# bottle images (.gpudata), in parts, each under its own time limit, each written as it ends:
#   1 checkpoints  build the model files                        (scripts/benchmark.py --build-only)
#   2 authors      the authors' code (SAA-plus @23acbd9, .authors), its maps; transformers 4.57 from
#                  .whl/authors; its uncompiled Grounding DINO runs the PyTorch deformable attention
#                  (scripts/bench_authors.py says so in its notes)
#   3 saa          saa fp32 B=1 (fast kernels), B=8, bf16 B=1 and B=8, fp32 with the authors' kernels
#                  (exact), the straightforward schedule; images/s, peak GPU memory, largest map
#                  difference to the authors' maps and to the straightforward schedule
#   4 cuda_tests   python -m pytest -m cuda tests/test_cuda.py (tiny models)
# $OUT (what comes back; at most 8 files): log.txt, summary.md and summary.json (rewritten after
# every part), checkpoints.json, authors.json, saa.json, cuda_tests.txt.
# Time: the four parts share a budget of 8 minutes (SAA_GPU_BUDGET seconds, counted from the end of
# the ~20 s wheel installation). Each part runs under its own limit: at most its cap
# (SAA_GPU_CAP_<PART>, seconds) and at most what the budget leaves after the minimum reserved for
# the parts after it, so time a part leaves unused goes to the later ones and the whole never
# exceeds the budget. SAA_GPU_IMAGES: the number of images.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=gpu
[ "${1:-}" = "--dry-run" ] && MODE=dry
OUT=${OUT:-/tmp/saa_gpu_out}
WORK=${SAA_GPU_WORK:-/tmp/saa_gpu_work}
mkdir -p "$OUT" "$WORK"
rm -f "$WORK"/part_*.json
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ $MODE = gpu ]; then
    N_IMAGES=${SAA_GPU_IMAGES:-8}; BATCH=8; DEVICE=cuda; MODELS=(--models realsize --sam vit_h)
    IMAGE_GLOB=".gpudata/bottle/test/*/*.png"; EXTRA=(); CACHE=${SAA_BENCH_CACHE:-/tmp/saa_bench}
    BUDGET=${SAA_GPU_BUDGET:-480}
    SCHEDULES=(--batch-sizes "$BATCH" --compare-precision bf16 --exact --baseline --no-saliency-steps)
    echo "== wheels"
    rm -rf /tmp/site /tmp/site_authors
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/saa/*.whl \
        || { echo "wheel install failed (.whl/saa: run bash scripts/prepare_device.sh first)"; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_authors \
        .whl/authors/*.whl || echo "authors' wheels not installed: the authors' part will fail"
    SAA_PATH="/tmp/site:$REPO"
    AUTHORS_PATH="/tmp/site_authors:/tmp/site:$REPO"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
else  # --dry-run: this machine's environment, the CPU, the tiny models, 2 images
    N_IMAGES=${SAA_GPU_IMAGES:-2}; BATCH=2; DEVICE=cpu; MODELS=(--models tiny)
    IMAGE_GLOB=${SAA_DRY_IMAGES:-"$REPO/../shared/realdata/mvtec_ad__*/bottle/test/*/*.png"}
    EXTRA=(--set "general_prompts=[]"); CACHE=${SAA_BENCH_CACHE:-/tmp/saa_bench}
    BUDGET=${SAA_GPU_BUDGET:-1800}
    SCHEDULES=(--batch-sizes "$BATCH" --compare-precision bf16 --precision-batch-sizes "$BATCH" --no-saliency-steps
               --no-warmup)
    SAA_PATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    AUTHORS_PATH=$SAA_PATH
fi
AUTHORS_MAPS=${SAA_AUTHORS_MAPS:-$WORK/authors_maps.npz}
[ -z "${SAA_AUTHORS_MAPS:-}" ] && rm -f "$AUTHORS_MAPS"

py() { env PYTHONPATH="$SAA_PATH" python3 "$@"; }
summary() { py scripts/gpu_summary.py --out "$OUT" --work "$WORK" --mode "$MODE" > /dev/null || echo "(summary failed)"; }
# per part: cap (s) and the minimum kept for the parts after it (s); the dry run on a shared CPU
# is limited by its budget alone
if [ $MODE = gpu ]; then caps=(120 150 220 180); else caps=("$BUDGET" "$BUDGET" "$BUDGET" "$BUDGET"); fi
CAP_CHECKPOINTS=${SAA_GPU_CAP_CHECKPOINTS:-${caps[0]}}; AFTER_CHECKPOINTS=240  # authors 60, saa 100, tests 80
CAP_AUTHORS=${SAA_GPU_CAP_AUTHORS:-${caps[1]}};         AFTER_AUTHORS=180      # saa 100, cuda tests 80
CAP_SAA=${SAA_GPU_CAP_SAA:-${caps[2]}};                 AFTER_SAA=80           # cuda tests 80
CAP_CUDA_TESTS=${SAA_GPU_CAP_CUDA_TESTS:-${caps[3]}};   AFTER_CUDA_TESTS=0
START=$SECONDS
part() {  # NAME COMMAND...: run under the part's limit, record exit status and seconds, refresh the summary
    local name=$1 t0=$SECONDS rc timed_out=false key cap after limit
    shift
    key=$(echo "$name" | tr '[:lower:]' '[:upper:]')
    cap=$(eval echo "\$CAP_$key"); after=$(eval echo "\$AFTER_$key")
    limit=$((BUDGET - (SECONDS - START) - after))
    [ "$limit" -gt "$cap" ] && limit=$cap
    if [ "$limit" -lt 10 ]; then
        skip "$name" "no time left: its limit would be $limit s (cap $cap s, budget $BUDGET s)"
        return
    fi
    echo "== part $name (limit ${limit} s)"
    timeout -k 10 "$limit" "$@"
    rc=$?
    { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && timed_out=true
    echo "== part $name: exit $rc after $((SECONDS - t0)) s$([ $timed_out = true ] && echo ' (time limit)')"
    printf '{"part": "%s", "rc": %d, "seconds": %d, "limit_s": %d, "timed_out": %s}\n' \
        "$name" "$rc" "$((SECONDS - t0))" "$limit" "$timed_out" > "$WORK/part_$name.json"
    summary
}
skip() {  # NAME REASON
    echo "== part $1: skipped: $2"
    py -c 'import json, sys; print(json.dumps({"part": sys.argv[1], "skipped": sys.argv[2]}))' "$1" "$2" \
        > "$WORK/part_$1.json"
    summary
}

echo "== environment ($MODE)"
py - > "$WORK/env.json" <<'PY'
import json, platform, sys
import torch
info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
try:
    import transformers
    info["transformers"] = transformers.__version__
except ImportError as e:
    info["transformers"] = f"missing ({e})"
print(json.dumps(info))
PY
cat "$WORK/env.json"
mapfile -t IMAGES < <(py - "$IMAGE_GLOB" "$N_IMAGES" <<'PY'
import glob, sys
images = sorted(glob.glob(sys.argv[1]))
n = int(sys.argv[2])
step = max(1, len(images) // n)
print("\n".join(images[::step][:n]))
PY
)
if [ ${#IMAGES[@]} -eq 0 ] || [ -z "${IMAGES[0]}" ]; then
    echo "no images match $IMAGE_GLOB (GPU run: bash scripts/prepare_device.sh stages .gpudata)"
    skip checkpoints "no images"; exit 2
fi
echo "images (${#IMAGES[@]}): ${IMAGES[*]}"

part checkpoints env PYTHONPATH="$SAA_PATH" python3 scripts/benchmark.py "${MODELS[@]}" \
    --build-only --cache "$CACHE" --out "$OUT/checkpoints.json"

if [ $MODE = dry ]; then
    skip authors "dry run: the authors' code builds SAM ViT-H and the full Grounding DINO (GPU run only)"
elif [ ! -f .authors/SAA/model.py ]; then
    skip authors "the authors' code is not staged (.authors): bash scripts/prepare_device.sh --authors PATH"
elif [ ! -f "$OUT/checkpoints.json" ]; then
    skip authors "no model files (the checkpoints part failed)"
else
    part authors env PYTHONPATH="$AUTHORS_PATH" python3 scripts/bench_authors.py \
        --snapshot .authors --files "$OUT/checkpoints.json" --images "${IMAGES[@]}" --device "$DEVICE" \
        --out "$OUT/authors.json" --maps "$AUTHORS_MAPS"
fi

part saa env PYTHONPATH="$SAA_PATH" python3 scripts/benchmark.py "${MODELS[@]}" --device "$DEVICE" \
    --image-files "${IMAGES[@]}" "${SCHEDULES[@]}" "${EXTRA[@]}" --reference-maps "$AUTHORS_MAPS" \
    --cache "$CACHE" --out "$OUT/saa.json"

part cuda_tests bash -c "set -o pipefail; env PYTHONPATH='$SAA_PATH' python3 -m pytest -q -rA \
    -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 | tee '$OUT/cuda_tests.txt'"

echo "== summary"
cat "$OUT/summary.md" 2>/dev/null || echo "(no summary)"

#!/usr/bin/env bash
# Stage what the GPU check (scripts/device_gpu_bench.sh) needs on the lent device machine, which
# has python3 3.12 with torch, timm, OpenCV, scikit-learn ... but nothing of ours, transformers 5
# (groundingdino needs <5), and no network, and which does not get ../shared:
#   .whl/      the missing packages as wheels for CPython 3.12 (~19 MB)
#   .gpudata/  the 5 real MVTec bottle images the CPU benchmark uses, with their masks
# Both folders are git-ignored here via .git/info/exclude. Run from the repository root:
#   bash scripts/prepare_device.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.whl/ /.gpudata/; do
    grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
rm -rf .whl .gpudata
# versions chosen to match each other (pydantic 2.12.3 pins pydantic-core 2.41.4; transformers
# 4.57 wants tokenizers <= 0.23.0 and huggingface-hub < 1, older than the device's own)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    transformers==4.57.6 tokenizers==0.22.1 huggingface-hub==0.36.0 rf-groundingdino==0.3.0 \
    segment-anything==1.0 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.8 pycocotools==2.0.11 \
    pydantic==2.12.3 pydantic-core==2.41.4 annotated-types==0.8.0 typing-inspection==0.4.5
python3 - <<'PY'
import glob, shutil
from pathlib import Path
# the same 5 images as scripts/benchmark.py's default selection
images = sorted(glob.glob("../shared/realdata/mvtec_ad__*/bottle/test/*/*.png"))
if not images:
    raise SystemExit("no MVTec bottle images under ../shared/realdata")
step = max(1, len(images) // 5)
for src in map(Path, images[::step][:5]):
    kind = src.parent.name
    dst = Path(".gpudata/bottle/test") / kind / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    mask = src.parents[2] / "ground_truth" / kind / f"{src.stem}_mask.png"
    if mask.is_file():
        (Path(".gpudata/bottle/ground_truth") / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy2(mask, Path(".gpudata/bottle/ground_truth") / kind / mask.name)
    print("staged", dst)
PY
du -sh .whl .gpudata

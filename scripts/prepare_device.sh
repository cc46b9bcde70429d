#!/usr/bin/env bash
# Stage what the GPU comparison (scripts/device_gpu_bench.sh) needs on the lent GPU machine. That
# machine has python3 3.12 with torch, transformers 5, timm, OpenCV, scikit-learn, pytest ... but
# nothing of ours, no pydantic, no network, and it does not get ../shared. Run here (pip must reach
# the package index), from anywhere in the checkout the device tool sends:
#   bash scripts/prepare_device.sh [--authors PATH] [--images N]
# It fills three git-ignored folders (.gitignore), which the device run carries:
#   .whl/saa/      wheels (CPython 3.12, manylinux) of what saa and its tests lack there (~3.4 MB)
#   .whl/authors/  transformers 4.57 with its tokenizers and huggingface-hub (~16 MB): the authors'
#                  code needs transformers < 5; device_gpu_bench.sh puts them first on the path of
#                  that part only (saa runs on the machine's transformers 5)
#   .gpudata/      N (default 8) real MVTec bottle test images with their masks, evenly spread over
#                  the sorted ../shared/realdata/mvtec_ad__*/bottle/test/*/*.png (scripts/benchmark.py's rule)
#   .authors/      the authors' code, SAA-plus @23acbd9: SAA/, GroundingDINO/groundingdino/ and
#                  SAM/segment_anything/ of the repository caoyunkang/Segment-Any-Anomaly, taken from
#                  PATH (a checkout, or a git directory holding the commit, e.g. a bare mirror), else
#                  from ../shared/fidelity when a copy is there. Without it the GPU run skips the
#                  authors' part and says so.
# Then, with the device tool (one run, at most 8 minutes of commands):
#   run(command="bash scripts/device_gpu_bench.sh", carry=[".whl", ".gpudata", ".authors"], timeout_s=560)
set -euo pipefail
cd "$(dirname "$0")/.."
COMMIT=23acbd9
AUTHORS=""
N_IMAGES=8
while [ $# -gt 0 ]; do
    case "$1" in
        --authors) AUTHORS=${2:?--authors needs a path}; shift 2 ;;
        --images) N_IMAGES=${2:?--images needs a number}; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "prepare_device.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for d in .whl .gpudata .authors; do
    git check-ignore -q "$d/x" || { echo "prepare_device.sh: $d is not git-ignored (.gitignore)" >&2; exit 2; }
done

# ---------------------------------------------------------------- wheels
rm -rf .whl
download() {  # DEST PACKAGE==VERSION...
    local dest=$1; shift
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "$@"
}
# what saa needs beyond the machine's packages (pydantic 2.12.3 pins pydantic-core 2.41.4)
download .whl/saa rf-groundingdino==0.3.0 segment-anything==1.0 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.8 \
    pycocotools==2.0.11 pydantic==2.12.3 pydantic-core==2.41.4 annotated-types==0.8.0 typing-inspection==0.4.5
# the authors' code: transformers 4.57 wants tokenizers <= 0.23.0 and huggingface-hub < 1 (older than the machine's)
download .whl/authors transformers==4.57.6 tokenizers==0.22.1 huggingface-hub==0.36.0

# ---------------------------------------------------------------- images
rm -rf .gpudata
python3 - "$N_IMAGES" <<'PY'
import glob, shutil, sys
from pathlib import Path
n = int(sys.argv[1])
images = sorted(glob.glob("../shared/realdata/mvtec_ad__*/bottle/test/*/*.png"))
if not images:
    raise SystemExit("prepare_device.sh: no MVTec bottle images under ../shared/realdata")
step = max(1, len(images) // n)
for src in map(Path, images[::step][:n]):
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

# ---------------------------------------------------------------- the authors' code
rm -rf .authors
PARTS=(SAA GroundingDINO/groundingdino SAM/segment_anything)
is_checkout() { [ -f "$1/SAA/model.py" ] && [ -d "$1/GroundingDINO/groundingdino" ] && [ -d "$1/SAM/segment_anything" ]; }
has_commit() { git --git-dir="$1" cat-file -e "$COMMIT^{commit}" 2>/dev/null; }
find_authors() {
    local c
    for c in ../shared/fidelity ../shared/fidelity/*; do
        [ -e "$c" ] || continue
        if is_checkout "$c" || has_commit "$c" || has_commit "$c/.git"; then echo "$c"; return 0; fi
    done
    return 1
}
if [ -z "$AUTHORS" ]; then AUTHORS=$(find_authors || true); fi
if [ -z "$AUTHORS" ]; then
    echo "prepare_device.sh: the authors' code was not staged (no --authors PATH, no copy in ../shared/fidelity):"
    echo "  the GPU run will skip the authors' part. Stage it with: bash scripts/prepare_device.sh --authors PATH"
else
    mkdir -p .authors
    if has_commit "$AUTHORS" || has_commit "$AUTHORS/.git"; then
        gitdir=$AUTHORS; has_commit "$gitdir" || gitdir=$AUTHORS/.git
        git --git-dir="$gitdir" archive "$COMMIT" "${PARTS[@]}" | tar -x -C .authors
        echo "$COMMIT from $AUTHORS (git archive)" > .authors/SNAPSHOT
    elif is_checkout "$AUTHORS"; then
        for p in "${PARTS[@]}"; do
            mkdir -p ".authors/$(dirname "$p")"
            cp -r "$AUTHORS/$p" ".authors/$p"
        done
        find .authors -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
        head=$(git -C "$AUTHORS" rev-parse HEAD 2>/dev/null || echo unknown)
        case "$head" in
            $COMMIT*) ;;
            *) echo "prepare_device.sh: WARNING: $AUTHORS is at commit $head, not $COMMIT" ;;
        esac
        echo "$head from $AUTHORS (copy of a checkout)" > .authors/SNAPSHOT
    else
        echo "prepare_device.sh: $AUTHORS is neither a checkout of the authors' repository (SAA/model.py," \
             "GroundingDINO/groundingdino, SAM/segment_anything) nor a git directory holding commit $COMMIT" >&2
        exit 2
    fi
    echo "staged the authors' code: $(cat .authors/SNAPSHOT)"
fi
du -sh .whl .gpudata .authors 2>/dev/null || true

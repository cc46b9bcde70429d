#!/usr/bin/env bash
# Install saa and download the model weights it needs (SPEC section 8).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash install.sh [options]

Installs the saa package (pip install -e ".[EXTRAS]") into the current Python, then downloads
the model weights into a local folder. Run-time never contacts a model hub: everything the
default configs need is fetched here, once.

Options:
  --venv DIR          create (if needed) and use a virtual environment in DIR
  --extras LIST       pip extras to install, comma separated (default: test; e.g. ui,test)
  --weights-dir DIR   where to put the weights (default: weights/ in this repository)
  --sam vit_h|vit_l|vit_b
                      which SAM checkpoint to download (default: vit_h)
  --constraints FILE  pip constraints file for the package install (CI: .ci/constraints.txt, the
                      exact versions the suite was last run with)
  --sam-hq vit_b|vit_l|vit_h
                      also download SAM-HQ in the transformers layout (opt-in; for
                      models.sam.backend=transformers, models.sam.variant=sam_hq)
  --sam2 tiny|small|base_plus|large
                      also download SAM 2.1 in the transformers layout (opt-in; variant sam2)
  --no-weights        install the package only, download nothing
  --no-package        download the weights only, skip the pip install
  -h, --help          show this help

Downloaded into the weights folder:
  sam_vit_h_4b8939.pth (or the ViT-L / ViT-B file)   SAM checkpoint (sha256 prefix checked)
  groundingdino_swint_ogc.pth                      Grounding DINO Swin-T OGC checkpoint
  GroundingDINO_SwinT_OGC.py                       its config (copied from the groundingdino package)
  bert-base-uncased/                               text encoder + tokenizer (Hugging Face)
  wide_resnet50_2.pth                              timm ImageNet weights, plain state dict

  sam_hq_<size>/ , sam2.1_hiera_<size>/            only with --sam-hq / --sam2: transformers
                                                   folders (config.json, model.safetensors, ...)

Downloads resume where they stopped (curl -C -, into NAME.part); complete files are kept. The
SAM-HQ / SAM 2 files are checked against the sha256 (LFS files) or size the hub lists for them.
Environment overrides: PYTHON (interpreter, default python3), SAA_SAM_BASE_URL,
SAA_GROUNDINGDINO_URL, SAA_HF_BASE_URL (mirrors).
EOF
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python3)}"
VENV=""
EXTRAS="test"
WEIGHTS_DIR="$HERE/weights"
SAM_MODEL="vit_h"
DO_WEIGHTS=1
DO_PACKAGE=1
CONSTRAINTS=""
SAM_HQ=""
SAM2=""

die() { echo "install.sh: error: $*" >&2; exit 1; }
need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --venv) need_arg "$@"; VENV="$2"; shift 2 ;;
    --extras) need_arg "$@"; EXTRAS="$2"; shift 2 ;;
    --weights-dir) need_arg "$@"; WEIGHTS_DIR="$2"; shift 2 ;;
    --sam) need_arg "$@"; SAM_MODEL="$2"; shift 2 ;;
    --constraints) need_arg "$@"; CONSTRAINTS="$2"; shift 2 ;;
    --sam-hq) need_arg "$@"; SAM_HQ="$2"; shift 2 ;;
    --sam2) need_arg "$@"; SAM2="$2"; shift 2 ;;
    --no-weights) DO_WEIGHTS=0; shift ;;
    --no-package) DO_PACKAGE=0; shift ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

case "$SAM_MODEL" in
  vit_h) SAM_FILE="sam_vit_h_4b8939.pth"; SAM_SHA_PREFIX="4b8939" ;;
  vit_l) SAM_FILE="sam_vit_l_0b3195.pth"; SAM_SHA_PREFIX="0b3195" ;;
  vit_b) SAM_FILE="sam_vit_b_01ec64.pth"; SAM_SHA_PREFIX="01ec64" ;;
  *) die "--sam must be vit_h, vit_l or vit_b (got '$SAM_MODEL')" ;;
esac
case "$SAM_HQ" in
  "") ;;
  vit_b) SAM_HQ_REPO="syscv-community/sam-hq-vit-base" ;;
  vit_l) SAM_HQ_REPO="syscv-community/sam-hq-vit-large" ;;
  vit_h) SAM_HQ_REPO="syscv-community/sam-hq-vit-huge" ;;
  *) die "--sam-hq must be vit_b, vit_l or vit_h (got '$SAM_HQ')" ;;
esac
case "$SAM2" in
  ""|tiny|small|base_plus|large) ;;
  *) die "--sam2 must be tiny, small, base_plus or large (got '$SAM2')" ;;
esac
SAM2_REPO="facebook/sam2.1-hiera-${SAM2//_/-}"
HF_BASE_URL="${SAA_HF_BASE_URL:-https://huggingface.co}"
if [[ -n "$CONSTRAINTS" ]]; then
  [[ -f "$CONSTRAINTS" ]] || die "constraints file not found: $CONSTRAINTS"
  CONSTRAINTS="$(cd "$(dirname "$CONSTRAINTS")" && pwd)/$(basename "$CONSTRAINTS")"
fi
SAM_BASE_URL="${SAA_SAM_BASE_URL:-https://dl.fbaipublicfiles.com/segment_anything}"
DINO_URL="${SAA_GROUNDINGDINO_URL:-https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/groundingdino_swint_ogc.pth}"

# ------------------------------------------------------------------ python / venv
if [[ -n "$VENV" ]]; then
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  PYTHON="$VENV/bin/python"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter not found: $PYTHON (set PYTHON=...)"
echo "==> using $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

# ------------------------------------------------------------------ package
if [[ "$DO_PACKAGE" == 1 ]]; then
  # torch first, pinned, when it is missing: otherwise the dependency resolver may pick another build
  if ! "$PYTHON" -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "==> installing torch==2.14.1 torchvision==0.29.1"
    "$PYTHON" -m pip install "torch==2.14.1" "torchvision==0.29.1"
  fi
  SPEC="."
  [[ -n "$EXTRAS" ]] && SPEC=".[${EXTRAS}]"
  PIP_C=()
  [[ -n "$CONSTRAINTS" ]] && PIP_C=(-c "$CONSTRAINTS")
  echo "==> pip install -e \"$SPEC\" ${PIP_C[*]:-}"
  (cd "$HERE" && "$PYTHON" -m pip install "${PIP_C[@]}" -e "$SPEC")
fi

# ------------------------------------------------------------------ weights
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else "$PYTHON" -c 'import hashlib,sys;h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    [h.update(b) for b in iter(lambda: f.read(1<<20), b"")]
print(h.hexdigest())' "$1"; fi
}

# check FILE [SHA_PREFIX]: non-empty and (if given) sha256 starts with the prefix
check_file() {
  local f="$1" prefix="${2:-}"
  [[ -s "$f" ]] || return 1
  if [[ -n "$prefix" ]]; then
    local sum; sum="$(sha256_of "$f")"
    [[ "$sum" == "$prefix"* ]] || { echo "    sha256 of $(basename "$f") is $sum, expected it to start with $prefix" >&2; return 1; }
  fi
  return 0
}

# download NAME URL [SHA_PREFIX]
download() {
  local name="$1" url="$2" prefix="${3:-}"
  local dest="$WEIGHTS_DIR/$name" part="$WEIGHTS_DIR/$name.part"
  if [[ -f "$dest" ]]; then
    if check_file "$dest" "$prefix"; then
      echo "==> $name: already complete"
      return 0
    fi
    echo "==> $name: existing file is incomplete or corrupt; downloading again"
    rm -f "$dest"
  fi
  echo "==> downloading $name"
  echo "    from $url"
  if ! curl -L -C - --fail --retry 3 --retry-delay 2 -o "$part" "$url"; then
    echo "install.sh: download FAILED: $name" >&2
    echo "    url: $url" >&2
    if [[ -s "$part" ]]; then
      echo "    partial data kept in $part; run install.sh again to resume" >&2
    else
      rm -f "$part"
    fi
    exit 1
  fi
  if ! check_file "$part" "$prefix"; then
    echo "install.sh: downloaded file is empty or its checksum does not match: $name" >&2
    echo "    url: $url" >&2
    rm -f "$part"
    exit 1
  fi
  mv -f "$part" "$dest"
}

# download_hf_folder REPO DIR: every file of a hub model repository (transformers layout) into
# WEIGHTS_DIR/DIR, each resumable and checked against the sha256 (LFS) or size the hub lists
download_hf_folder() {
  local repo="$1" dir="$2" listing
  echo "==> $dir: files of $repo"
  listing="$(env -u HF_HUB_OFFLINE "$PYTHON" - "$HF_BASE_URL" "$repo" <<'PY'
import json, sys, urllib.request
base, repo = sys.argv[1].rstrip("/"), sys.argv[2]
with urllib.request.urlopen(f"{base}/api/models/{repo}/tree/main", timeout=60) as r:
    entries = json.load(r)
for e in entries:
    if e.get("type") != "file" or e["path"].startswith(".") or e["path"].endswith(".md"):
        continue
    sha = (e.get("lfs") or {}).get("oid", "")
    print(e["path"], sha or "-", e.get("size", 0))
PY
)" || die "cannot list $repo at $HF_BASE_URL (network?); retry later or set SAA_HF_BASE_URL"
  [[ -n "$listing" ]] || die "$repo lists no files"
  mkdir -p "$WEIGHTS_DIR/$dir"
  local path sha size
  while read -r path sha size; do
    [[ "$sha" == "-" ]] && sha=""
    mkdir -p "$(dirname "$WEIGHTS_DIR/$dir/$path")"
    download "$dir/$path" "$HF_BASE_URL/$repo/resolve/main/$path" "$sha"
    if [[ -z "$sha" && "$size" != 0 && "$(wc -c < "$WEIGHTS_DIR/$dir/$path" | tr -d ' ')" != "$size" ]]; then
      rm -f "$WEIGHTS_DIR/$dir/$path"
      die "$dir/$path: size differs from the hub's ($size bytes); run install.sh again"
    fi
  done <<< "$listing"
}

if [[ "$DO_WEIGHTS" == 1 ]]; then
  command -v curl >/dev/null 2>&1 || die "curl is needed to download the weights"
  mkdir -p "$WEIGHTS_DIR"
  WEIGHTS_DIR="$(cd "$WEIGHTS_DIR" && pwd)"
  echo "==> weights folder: $WEIGHTS_DIR"

  download "$SAM_FILE" "$SAM_BASE_URL/$SAM_FILE" "$SAM_SHA_PREFIX"
  download "groundingdino_swint_ogc.pth" "$DINO_URL" ""

  # Grounding DINO config, from the installed package
  "$PYTHON" - "$WEIGHTS_DIR/GroundingDINO_SwinT_OGC.py" <<'PY' || die "cannot copy the Grounding DINO config (is rf-groundingdino installed?)"
import importlib.util, os, shutil, sys
spec = importlib.util.find_spec("groundingdino")
src = os.path.join(os.path.dirname(spec.origin), "config", "GroundingDINO_SwinT_OGC.py")
shutil.copyfile(src, sys.argv[1])
print("==> GroundingDINO_SwinT_OGC.py: copied from", src)
PY

  # text encoder: the only place a model hub is contacted (install time)
  BERT_DIR="$WEIGHTS_DIR/bert-base-uncased"
  if [[ -s "$BERT_DIR/config.json" && -s "$BERT_DIR/vocab.txt" ]] && ls "$BERT_DIR"/model.safetensors "$BERT_DIR"/pytorch_model.bin >/dev/null 2>&1; then
    echo "==> bert-base-uncased: already complete"
  else
    echo "==> downloading bert-base-uncased (Hugging Face hub)"
    if ! env -u HF_HUB_OFFLINE -u TRANSFORMERS_OFFLINE "$PYTHON" -c '
import sys
from transformers import BertModel, BertTokenizerFast
out = sys.argv[1]
BertTokenizerFast.from_pretrained("bert-base-uncased").save_pretrained(out + ".part")
BertModel.from_pretrained("bert-base-uncased").save_pretrained(out + ".part")
' "$BERT_DIR"; then
      echo "install.sh: download FAILED: bert-base-uncased" >&2
      echo "    url: https://huggingface.co/bert-base-uncased" >&2
      exit 1
    fi
    rm -rf "$BERT_DIR" && mv "$BERT_DIR.part" "$BERT_DIR"
  fi

  # saliency backbone: timm ImageNet weights as a plain state dict
  WRN="$WEIGHTS_DIR/wide_resnet50_2.pth"
  if [[ -s "$WRN" ]]; then
    echo "==> wide_resnet50_2.pth: already complete"
  else
    echo "==> downloading timm wide_resnet50_2 ImageNet weights"
    if ! env -u HF_HUB_OFFLINE -u TRANSFORMERS_OFFLINE "$PYTHON" -c '
import os, sys, timm, torch
m = timm.create_model("wide_resnet50_2", pretrained=True)
torch.save(m.state_dict(), sys.argv[1] + ".part")
os.replace(sys.argv[1] + ".part", sys.argv[1])
' "$WRN"; then
      echo "install.sh: download FAILED: wide_resnet50_2.pth (timm wide_resnet50_2, pretrained=True)" >&2
      echo "    url: timm's weight source for wide_resnet50_2 (Hugging Face hub)" >&2
      exit 1
    fi
  fi
  [[ -n "$SAM_HQ" ]] && download_hf_folder "$SAM_HQ_REPO" "sam_hq_$SAM_HQ"
  [[ -n "$SAM2" ]] && download_hf_folder "$SAM2_REPO" "sam2.1_hiera_$SAM2"
  echo "==> weights ready in $WEIGHTS_DIR"
else
  echo "==> --no-weights: skipping all downloads"
fi
echo "==> done"

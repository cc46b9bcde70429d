#!/usr/bin/env bash
# Install saa and download the model weights it needs (SPEC section 8).
# Every download is tried (one failing does not stop the others), then one summary is printed.
set -uo pipefail

usage() {
  cat <<'EOF'
Usage: bash install.sh [options]

Installs the saa package (pip install -e ".[EXTRAS]") into the current Python, then downloads
the model weights into a local folder and records that folder for saa (see Settings). Run-time
never contacts a model hub: everything the default configs need is fetched here, once.

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
  --no-package        download the weights only, skip the pip install (to retry downloads)
  -h, --help          show this help

Downloaded into the weights folder:
  sam_vit_h_4b8939.pth (or the ViT-L / ViT-B file)   SAM checkpoint (sha256 prefix checked)
  groundingdino_swint_ogc.pth                      Grounding DINO Swin-T OGC checkpoint
  GroundingDINO_SwinT_OGC.py                       its config (copied from the groundingdino package)
  bert-base-uncased/                               text encoder + tokenizer (Hugging Face hub:
                                                   config.json, vocab.txt, tokenizer.json,
                                                   tokenizer_config.json, model.safetensors)
  wide_resnet50_2.pth                              timm ImageNet weights, plain state dict
                                                   (downloaded as wide_resnet50_2.safetensors,
                                                   then converted)
  sam_hq_<size>/ , sam2.1_hiera_<size>/            only with --sam-hq / --sam2: transformers
                                                   folders (config.json, model.safetensors, ...)

Every file is tried, even after another failed; then one summary lists each file as present,
downloaded (copied / converted) or FAILED, with its path and URL. Downloads resume where they stopped (curl -C -,
into NAME.part); complete files are kept. Hub files are checked against the sha256 (LFS files)
or size the hub lists for them. Each download shows curl's progress and gives up when it cannot
connect within $SAA_CONNECT_TIMEOUT seconds (default 20) or moves less than 1 kB/s for
$SAA_STALL_TIMEOUT seconds (default 60); a slow but live download goes on.

Exit status:
  0  the package is installed (or --no-package) and every model file is in place
  3  the package is installed and usable, but model files are missing (the summary lists them):
     the lite method runs without them (saa demo, --method lite); retry only the downloads
     with `bash install.sh --no-package` (same --weights-dir / --sam options)
  1  the package could not be installed, or a bad option

Environment: PYTHON (interpreter, default python3); mirrors:
  SAA_SAM_BASE_URL       folder of the SAM checkpoints (default https://dl.fbaipublicfiles.com/segment_anything)
  SAA_GROUNDINGDINO_URL  the Grounding DINO checkpoint (default: its GitHub release)
  SAA_HF_BASE_URL        a Hugging Face hub mirror (default https://huggingface.co): BERT,
                         wide_resnet50_2, SAM-HQ, SAM 2

Settings: the weights folder is recorded in the per-user settings file
($SAA_SETTINGS, default ${XDG_CONFIG_HOME:-~/.config}/saa/settings.json), so saa finds the files
from any working directory. `saa doctor` shows which files it finds where.
EOF
}

EXIT_OK=0
EXIT_ERROR=1
EXIT_WEIGHTS_MISSING=3

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python3)}"
VENV=""
EXTRAS="test"
WEIGHTS_DIR="$HERE/weights"
WEIGHTS_DIR_GIVEN=0
SAM_MODEL="vit_h"
DO_WEIGHTS=1
DO_PACKAGE=1
CONSTRAINTS=""
SAM_HQ=""
SAM2=""

die() { echo "install.sh: error: $*" >&2; exit "$EXIT_ERROR"; }
need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --venv) need_arg "$@"; VENV="$2"; shift 2 ;;
    --extras) need_arg "$@"; EXTRAS="$2"; shift 2 ;;
    --weights-dir) need_arg "$@"; WEIGHTS_DIR="$2"; WEIGHTS_DIR_GIVEN=1; shift 2 ;;
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
BERT_REPO="google-bert/bert-base-uncased"
BERT_FILES=(config.json vocab.txt tokenizer.json tokenizer_config.json model.safetensors)
HF_BASE_URL="${SAA_HF_BASE_URL:-https://huggingface.co}"
HF_BASE_URL="${HF_BASE_URL%/}"
SAM_BASE_URL="${SAA_SAM_BASE_URL:-https://dl.fbaipublicfiles.com/segment_anything}"
SAM_BASE_URL="${SAM_BASE_URL%/}"
DINO_URL="${SAA_GROUNDINGDINO_URL:-https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/groundingdino_swint_ogc.pth}"
CONNECT_TIMEOUT="${SAA_CONNECT_TIMEOUT:-20}"
STALL_TIMEOUT="${SAA_STALL_TIMEOUT:-60}"
[[ "$CONNECT_TIMEOUT" =~ ^[0-9]+$ && "$CONNECT_TIMEOUT" -gt 0 ]] || die "SAA_CONNECT_TIMEOUT must be a positive number of seconds (got '$CONNECT_TIMEOUT')"
[[ "$STALL_TIMEOUT" =~ ^[0-9]+$ && "$STALL_TIMEOUT" -gt 0 ]] || die "SAA_STALL_TIMEOUT must be a positive number of seconds (got '$STALL_TIMEOUT')"
if [[ -n "$CONSTRAINTS" ]]; then
  [[ -f "$CONSTRAINTS" ]] || die "constraints file not found: $CONSTRAINTS"
  CONSTRAINTS="$(cd "$(dirname "$CONSTRAINTS")" && pwd)/$(basename "$CONSTRAINTS")"
fi

# ------------------------------------------------------------------ python / venv
if [[ -n "$VENV" ]]; then
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV" || die "cannot create the virtual environment $VENV"
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
    "$PYTHON" -m pip install "torch==2.14.1" "torchvision==0.29.1" \
      || die "pip could not install torch (see its message above); nothing was downloaded. Fix that and run bash install.sh again"
  fi
  SPEC="."
  [[ -n "$EXTRAS" ]] && SPEC=".[${EXTRAS}]"
  PIP_C=()
  [[ -n "$CONSTRAINTS" ]] && PIP_C=(-c "$CONSTRAINTS")
  echo "==> pip install -e \"$SPEC\" ${PIP_C[*]:-}"
  (cd "$HERE" && "$PYTHON" -m pip install ${PIP_C[@]+"${PIP_C[@]}"} -e "$SPEC") \
    || die "pip could not install the saa package (see its message above); nothing was downloaded. Fix that and run bash install.sh again"
fi

# is the package importable from anywhere (not only from this folder)?
PKG_VERSION="$(cd / && "$PYTHON" -m saa --version 2>/dev/null)" || PKG_VERSION=""

if [[ "$DO_WEIGHTS" != 1 ]]; then
  echo "==> --no-weights: skipping all downloads"
  if [[ -n "$PKG_VERSION" ]]; then
    echo "==> done: $PKG_VERSION is installed ($PYTHON). Model files: run bash install.sh --no-package"
    echo "    to download them; the lite method runs without them (saa demo --method lite)."
    exit "$EXIT_OK"
  fi
  die "the saa package is not importable with $PYTHON (run bash install.sh without --no-package)"
fi

# ------------------------------------------------------------------ weights
# one row per file for the summary
R_NAME=(); R_STATUS=(); R_PATH=(); R_URL=(); R_NOTE=(); R_HAND=()
# record NAME STATUS PATH URL [NOTE] [WHERE-A-DOWNLOAD-BY-HAND-GOES]
record() {
  R_NAME+=("$1"); R_STATUS+=("$2"); R_PATH+=("$3"); R_URL+=("$4"); R_NOTE+=("${5:-}"); R_HAND+=("${6:-$3}")
}

if [[ -t 2 ]]; then PROGRESS=(--progress-bar); else PROGRESS=(--show-error); fi

curl_reason() {
  case "$1" in
    5|6) echo "cannot resolve the host name (no network, or no DNS?)" ;;
    7) echo "cannot connect to the server (no network, a firewall, or a proxy needed?)" ;;
    22) echo "the server answered with an HTTP error (the file is not at this URL)" ;;
    28) echo "timed out (no connection within ${CONNECT_TIMEOUT} s, or under 1 kB/s for ${STALL_TIMEOUT} s)" ;;
    35|51|58|60|77|83) echo "TLS / certificate problem (a proxy that rewrites certificates?)" ;;
    18|52|56|92) echo "the connection broke off" ;;
    23) echo "cannot write the file (disk full, or no permission?)" ;;
    33) echo "the server cannot resume the partial download (delete the .part file and run again)" ;;
    *) echo "curl failed (exit $1)" ;;
  esac
}

# the server of a URL could not be reached at all (not worth trying its other files)
unreachable() { [[ "$1" == 5 || "$1" == 6 || "$1" == 7 || "$1" == 28 ]]; }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else "$PYTHON" -c 'import hashlib,sys;h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    [h.update(b) for b in iter(lambda: f.read(1<<20), b"")]
print(h.hexdigest())' "$1"; fi
}

# check_file FILE [SHA_OR_PREFIX] [SIZE]: non-empty, sha256 starts with SHA (if given), SIZE bytes
# (if given); prints what is wrong otherwise
check_file() {
  local f="$1" sha="${2:-}" size="${3:-}"
  [[ -s "$f" ]] || { echo "it is empty"; return 1; }
  if [[ -n "$size" && "$size" != 0 ]]; then
    local have; have="$(wc -c < "$f" | tr -d ' ')"
    [[ "$have" == "$size" ]] || { echo "it has $have bytes, the hub lists $size"; return 1; }
  fi
  if [[ -n "$sha" ]]; then
    local sum; sum="$(sha256_of "$f")"
    [[ "$sum" == "$sha"* ]] || { echo "its sha256 is $sum, expected ${sha}..."; return 1; }
  fi
  return 0
}

# get NAME URL [SHA] [SIZE]: WEIGHTS_DIR/NAME from URL unless already in place. Sets GOT_STATUS
# (present / downloaded / failed), GOT_NOTE and GOT_RC (curl's exit status); returns 0 when in place.
get() {
  local name="$1" url="$2" sha="${3:-}" size="${4:-}"
  local dest="$WEIGHTS_DIR/$name" part="$WEIGHTS_DIR/$name.part" why rc=0
  GOT_STATUS=failed; GOT_NOTE=""; GOT_RC=0
  if [[ -f "$dest" ]]; then
    if why="$(check_file "$dest" "$sha" "$size")"; then
      echo "==> $name: already in place"
      GOT_STATUS=present; return 0
    fi
    echo "==> $name: the existing file is not right ($why); downloading it again"
    rm -f "$dest"
  fi
  mkdir -p "$(dirname "$dest")" || { GOT_NOTE="cannot create the folder $(dirname "$dest")"; return 1; }
  echo "==> downloading $name"
  echo "    from $url"
  curl -L -C - --fail --retry 2 --retry-delay 2 --connect-timeout "$CONNECT_TIMEOUT" \
       --speed-limit 1024 --speed-time "$STALL_TIMEOUT" "${PROGRESS[@]}" -o "$part" "$url" || rc=$?
  GOT_RC=$rc
  if [[ $rc != 0 ]]; then
    GOT_NOTE="$(curl_reason "$rc")"
    if [[ -s "$part" ]]; then GOT_NOTE="$GOT_NOTE; partial data kept in $part, the next run resumes it"
    else rm -f "$part"; fi
    echo "    FAILED: $GOT_NOTE" >&2
    return 1
  fi
  if ! why="$(check_file "$part" "$sha" "$size")"; then
    rm -f "$part"
    GOT_NOTE="downloaded, but $why (deleted)"
    echo "    FAILED: $GOT_NOTE" >&2
    return 1
  fi
  mv -f "$part" "$dest"
  GOT_STATUS=downloaded
}

# fetch NAME URL [SHA] [SIZE]: get + one summary row
fetch() {
  get "$@"
  local rc=$?
  record "$1" "$GOT_STATUS" "$WEIGHTS_DIR/$1" "$2" "$GOT_NOTE"
  return $rc
}

# hf_listing REPO [FILE...]: "path sha256-or-- size" of the files of a hub model repository (all
# but dotfiles and .md when no FILE is named); the error on stderr when it cannot be listed
hf_listing() {
  "$PYTHON" - "$HF_BASE_URL" "$CONNECT_TIMEOUT" "$@" <<'PY'
import json, sys, urllib.request
base, timeout, repo, wanted = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
try:
    with urllib.request.urlopen(f"{base}/api/models/{repo}/tree/main", timeout=timeout) as r:
        entries = json.load(r)
except Exception as e:  # any failure: the caller reports it and goes on without checksums
    print(getattr(e, "reason", None) or e, file=sys.stderr)
    sys.exit(1)
listed = {}
for e in entries:
    if isinstance(e, dict) and e.get("type") == "file":
        listed[e["path"]] = ((e.get("lfs") or {}).get("oid") or "-", e.get("size", 0))
names = wanted or [p for p in listed if not p.startswith(".") and not p.endswith(".md")]
for p in names:
    sha, size = listed.get(p, ("-", 0))
    print(p, sha, size)
PY
}

# hf_files REPO DIR [FILE...]: files of a hub repository into WEIGHTS_DIR/DIR (the named ones, or
# every file when none are named), one summary row each. A folder left empty is removed (saa would
# take an empty folder for a model folder that is not there).
hf_files() {
  _hf_files "$@"
  rmdir "$WEIGHTS_DIR/$2" 2>/dev/null || true
}
_hf_files() {
  local repo="$1" dir="$2"; shift 2
  local listing err path sha size rc
  echo "==> $dir/: files of $repo ($HF_BASE_URL)"
  if listing="$(hf_listing "$repo" "$@" 2>"$TMP_ERR")"; then
    [[ -n "$listing" ]] || { record "$dir/" failed "$WEIGHTS_DIR/$dir" "$HF_BASE_URL/$repo" "the hub lists no files"; return; }
    while read -r path sha size; do
      [[ "$sha" == "-" ]] && sha=""
      fetch "$dir/$path" "$HF_BASE_URL/$repo/resolve/main/$path" "$sha" "$size"
    done <<< "$listing"
    return
  fi
  err="$(tr '\n' ' ' < "$TMP_ERR")"
  echo "    cannot list the files of $repo: ${err:-unknown error}" >&2
  if [[ $# == 0 ]]; then
    record "$dir/" failed "$WEIGHTS_DIR/$dir" "$HF_BASE_URL/$repo" "cannot list its files (${err:-unknown error})"
    return
  fi
  # the files are known: try them without the hub's checksums; stop at an unreachable server
  local skip=""
  for path in "$@"; do
    if [[ -n "$skip" ]]; then
      record "$dir/$path" failed "$WEIGHTS_DIR/$dir/$path" "$HF_BASE_URL/$repo/resolve/main/$path" "not tried: $skip"
      continue
    fi
    fetch "$dir/$path" "$HF_BASE_URL/$repo/resolve/main/$path"; rc=$?
    if [[ $rc != 0 ]] && unreachable "$GOT_RC"; then skip="the server could not be reached for $dir/${1}"; fi
  done
}

command -v curl >/dev/null 2>&1 || die "curl is needed to download the weights (install it, e.g. apt-get install curl)"
mkdir -p "$WEIGHTS_DIR" || die "cannot create the weights folder $WEIGHTS_DIR"
WEIGHTS_DIR="$(cd "$WEIGHTS_DIR" && pwd)"
TMP_ERR="$(mktemp)"
trap 'rm -f "$TMP_ERR"' EXIT
echo "==> weights folder: $WEIGHTS_DIR"

fetch "$SAM_FILE" "$SAM_BASE_URL/$SAM_FILE" "$SAM_SHA_PREFIX"
fetch "groundingdino_swint_ogc.pth" "$DINO_URL"

# Grounding DINO config, from the installed package
DINO_CFG="$WEIGHTS_DIR/GroundingDINO_SwinT_OGC.py"
if [[ -s "$DINO_CFG" ]]; then
  echo "==> GroundingDINO_SwinT_OGC.py: already in place"
  record "GroundingDINO_SwinT_OGC.py" present "$DINO_CFG" "groundingdino package (rf-groundingdino)"
elif out="$("$PYTHON" - "$DINO_CFG" 2>&1 <<'PY'
import importlib.util, os, shutil, sys
spec = importlib.util.find_spec("groundingdino")
if spec is None:
    sys.exit("the groundingdino package is not installed (pip install rf-groundingdino)")
src = os.path.join(os.path.dirname(spec.origin), "config", "GroundingDINO_SwinT_OGC.py")
shutil.copyfile(src, sys.argv[1])
print(src)
PY
)"; then
  echo "==> GroundingDINO_SwinT_OGC.py: copied from $out"
  record "GroundingDINO_SwinT_OGC.py" copied "$DINO_CFG" "groundingdino package (rf-groundingdino)" "copied from $out"
else
  record "GroundingDINO_SwinT_OGC.py" failed "$DINO_CFG" "groundingdino package (rf-groundingdino)" "$(echo "$out" | tail -n 1)"
fi

# text encoder: BERT from the hub (the only place a model hub is contacted: install time)
BERT_DIR="$WEIGHTS_DIR/bert-base-uncased"
# complete as a folder: every file but the weights, and the weights as safetensors or (an older
# install.sh's save_pretrained) pytorch_model.bin
bert_complete() {
  local f
  for f in "${BERT_FILES[@]}"; do
    [[ "$f" == model.safetensors || -s "$BERT_DIR/$f" ]] || return 1
  done
  [[ -s "$BERT_DIR/model.safetensors" || -s "$BERT_DIR/pytorch_model.bin" ]]
}
if bert_complete; then
  echo "==> bert-base-uncased/: already in place"
  record "bert-base-uncased/" present "$BERT_DIR" "$HF_BASE_URL/$BERT_REPO"
else
  hf_files "$BERT_REPO" "bert-base-uncased" "${BERT_FILES[@]}"
fi

# saliency backbone: timm's ImageNet weights (a safetensors file on the hub), saved as a plain
# state dict; the model is built first, so a wrong file is refused here, not at run time
WRN="$WEIGHTS_DIR/wide_resnet50_2.pth"
WRN_ST="wide_resnet50_2.safetensors"
WRN_HUB="$("$PYTHON" -c 'import timm; print(timm.models.get_pretrained_cfg("wide_resnet50_2").hf_hub_id or "")' 2>/dev/null)"
WRN_HUB="${WRN_HUB:-timm/wide_resnet50_2.racm_in1k}"
WRN_URL="$HF_BASE_URL/$WRN_HUB/resolve/main/model.safetensors"
if [[ -s "$WRN" ]]; then
  echo "==> wide_resnet50_2.pth: already in place"
  record "wide_resnet50_2.pth" present "$WRN" "$WRN_URL"
elif get "$WRN_ST" "$WRN_URL"; then
  if out="$("$PYTHON" - "$WEIGHTS_DIR/$WRN_ST" "$WRN" 2>&1 <<'PY'
import os, sys
import timm, torch
from safetensors.torch import load_file
src, dest = sys.argv[1], sys.argv[2]
model = timm.create_model("wide_resnet50_2", pretrained=False)
model.load_state_dict(load_file(src))  # strict: every key and shape must match
torch.save(model.state_dict(), dest + ".part")
os.replace(dest + ".part", dest)
os.remove(src)
PY
)"; then
    echo "==> wide_resnet50_2.pth: converted from $WRN_ST"
    wrn_status=converted; [[ "$GOT_STATUS" == downloaded ]] && wrn_status=downloaded
    record "wide_resnet50_2.pth" "$wrn_status" "$WRN" "$WRN_URL" "converted from the hub's model.safetensors"
  else
    record "wide_resnet50_2.pth" failed "$WRN" "$WRN_URL" \
      "downloaded, but cannot convert $WEIGHTS_DIR/$WRN_ST: $(echo "$out" | tail -n 1)" "$WEIGHTS_DIR/$WRN_ST"
  fi
else
  record "wide_resnet50_2.pth" failed "$WRN" "$WRN_URL" "$GOT_NOTE" "$WEIGHTS_DIR/$WRN_ST"
fi

[[ -n "$SAM_HQ" ]] && hf_files "$SAM_HQ_REPO" "sam_hq_$SAM_HQ"
[[ -n "$SAM2" ]] && hf_files "$SAM2_REPO" "sam2.1_hiera_$SAM2"

# record the folder for saa (stdlib only: works before the dependencies are importable)
if SETTINGS_MSG="$(cd "$HERE" && "$PYTHON" -m saa.settings --record-weights-dir "$WEIGHTS_DIR" 2>&1)"; then
  SETTINGS_OK=1
else
  SETTINGS_OK=0
fi

# ------------------------------------------------------------------ summary
n_failed=0
for s in "${R_STATUS[@]}"; do [[ "$s" == failed ]] && n_failed=$((n_failed + 1)); done
echo
echo "==================================================================== summary"
printf '  %-10s  %-34s  %s\n' "STATUS" "FILE" "PATH  (from URL)"
for i in "${!R_NAME[@]}"; do
  st="${R_STATUS[$i]}"; [[ "$st" == failed ]] && st="FAILED"
  printf '  %-10s  %-34s  %s\n' "$st" "${R_NAME[$i]}" "${R_PATH[$i]}"
  printf '  %-10s  %-34s  from %s\n' "" "" "${R_URL[$i]}"
  [[ -n "${R_NOTE[$i]}" ]] && printf '  %-10s  %-34s  %s\n' "" "" "${R_NOTE[$i]}"
done
echo
if [[ -n "$PKG_VERSION" ]]; then
  echo "package:  $PKG_VERSION is installed and usable ($PYTHON)"
else
  echo "package:  NOT importable with $PYTHON: run bash install.sh without --no-package"
fi
if [[ "$SETTINGS_OK" == 1 ]]; then
  echo "weights:  $WEIGHTS_DIR ($SETTINGS_MSG; saa finds the files from any folder)"
else
  echo "weights:  $WEIGHTS_DIR (could not record it: $SETTINGS_MSG; set SAA_WEIGHTS_DIR=$WEIGHTS_DIR instead)"
fi

if [[ $n_failed == 0 ]]; then
  echo "all ${#R_NAME[@]} files above are in place. Next: saa demo   (saa doctor checks the installation)"
  [[ -n "$PKG_VERSION" ]] && exit "$EXIT_OK"
  exit "$EXIT_ERROR"
fi

RETRY="bash $0 --no-package"
[[ -n "$VENV" ]] && RETRY="$RETRY --venv $VENV"
[[ "$WEIGHTS_DIR_GIVEN" == 1 ]] && RETRY="$RETRY --weights-dir $WEIGHTS_DIR"
[[ "$SAM_MODEL" != vit_h ]] && RETRY="$RETRY --sam $SAM_MODEL"
[[ -n "$SAM_HQ" ]] && RETRY="$RETRY --sam-hq $SAM_HQ"
[[ -n "$SAM2" ]] && RETRY="$RETRY --sam2 $SAM2"
cat <<EOF

$n_failed of the ${#R_NAME[@]} files above could not be downloaded or checked (FAILED).
EOF
if [[ -n "$PKG_VERSION" ]]; then
  cat <<EOF
The saa package IS installed and usable. Without these files the full method (SAA+) cannot run,
but the lite method needs none of them:
    saa demo --method lite            saa run CONFIG --method lite
    saa predict --config configs/mvtec.yaml --category bottle --method lite --out DIR IMAGES...
EOF
fi
cat <<EOF
To get the missing files:
  - retry only the downloads (partial files resume; files in place are kept):
        $RETRY
  - through a mirror: set SAA_SAM_BASE_URL, SAA_GROUNDINGDINO_URL and/or SAA_HF_BASE_URL
    (see bash install.sh --help), then run the command above
  - by hand: download each FAILED URL above (on any machine) and put the file at
EOF
for i in "${!R_NAME[@]}"; do
  [[ "${R_STATUS[$i]}" == failed ]] || continue
  printf '        %s\n            <- %s\n' "${R_HAND[$i]}" "${R_URL[$i]}"
done
cat <<EOF
    then run the retry command above (it checks them; wide_resnet50_2.safetensors is converted)
\`saa doctor\` shows which model files saa finds and where.
EOF
if [[ -n "$PKG_VERSION" ]]; then
  echo "exit status $EXIT_WEIGHTS_MISSING: the package is installed, model files are missing"
  exit "$EXIT_WEIGHTS_MISSING"
fi
exit "$EXIT_ERROR"

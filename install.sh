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

PyTorch: a torch (and torchvision) that imports is never replaced: install.sh says which build it
found and pins it for the package install. Only when torch does not import does it install one,
after printing the import error and what it installs: torch==2.14.1 torchvision==0.29.1 (the
versions of --constraints when it pins them) from PyPI -- on Linux x86_64 the CUDA build -- or,
with --cpu, the CPU build. The summary names the torch build in use and its size on disk.

Options:
  --venv DIR          create (if needed) and use a virtual environment in DIR
  --extras LIST       pip extras to install, comma separated (default: test; e.g. ui,test)
  --weights-dir DIR   where to put the weights (default: weights/ in this repository)
  --sam vit_h|vit_l|vit_b
                      which SAM checkpoint to download (default: vit_h)
  --constraints FILE  pip constraints file for the package install (CI: .ci/constraints.txt, the
                      exact versions the suite was last run with)
  --cpu               when PyTorch must be installed, take its CPU build (about 1 GB instead of
                      6-7 GB with the CUDA libraries) from PyTorch's CPU wheel index
                      ($SAA_TORCH_CPU_INDEX, default https://download.pytorch.org/whl/cpu);
                      use it on a machine without an NVIDIA GPU
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
into NAME.part); complete files are kept. Every file, downloaded or already in place, is checked:
against the sha256 (LFS files) or size the hub lists for it, SAM against the sha256 prefix in
its name, and every file by its content: not an HTML / XML page (a proxy's or mirror's error or
login page), JSON files parse, safetensors files have a valid header covering the whole file,
.pth / .bin files are a PyTorch zip archive (with data.pkl) or pickle. A file that fails is
removed and listed as FAILED with the reason; "present" is said only of a file that passes.
Each download shows curl's progress and gives up when it cannot
connect within $SAA_CONNECT_TIMEOUT seconds (default 20) or moves less than 1 kB/s for
$SAA_STALL_TIMEOUT seconds (default 60); a slow but live download goes on.

Exit status:
  0  the package is installed (or --no-package) and every model file is in place
  3  the package is installed and usable, but model files are missing (the summary lists them):
     the lite method runs without them (saa demo, --method lite); retry only the downloads
     with `bash install.sh --no-package` (same --weights-dir / --sam options)
  1  the package could not be installed, or a bad option

Environment: PYTHON (interpreter, default python3); SAA_TORCH_CPU_INDEX (the index --cpu uses); mirrors:
  SAA_SAM_BASE_URL       folder of the SAM checkpoints (default https://dl.fbaipublicfiles.com/segment_anything)
  SAA_GROUNDINGDINO_URL  the Grounding DINO checkpoint (default: its GitHub release)
  SAA_HF_BASE_URL        a Hugging Face hub mirror (default https://huggingface.co): BERT,
                         wide_resnet50_2, SAM-HQ, SAM 2

Settings: the weights folder is recorded in the per-user settings file
($SAA_SETTINGS, default ${XDG_CONFIG_HOME:-~/.config}/saa/settings.json) for this clone (each
clone keeps its own record; the latest one is also the user-wide default for copies of saa that
have none), so saa finds the files from any working directory. `saa doctor` shows which files it
finds where and which clone recorded each folder.
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
TORCH_CPU=0
TORCH_CPU_INDEX="${SAA_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

die() { echo "install.sh: error: $*" >&2; exit "$EXIT_ERROR"; }
TMP_FILES=()
cleanup() { [[ ${#TMP_FILES[@]} == 0 ]] || rm -f "${TMP_FILES[@]}"; }
trap cleanup EXIT
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
    --cpu) TORCH_CPU=1; shift ;;
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

# ------------------------------------------------------------------ torch
# torch_probe: prints "TORCH_VERSION TORCHVISION_VERSION BUILD" and returns 0 when both import; else
# prints the import error (one line) and returns 1 (torch does not import) or 2 (torchvision does not)
torch_probe() {
  local out rc=0
  out="$(_torch_probe)" || rc=$?
  if [[ $rc -gt 2 ]]; then  # the interpreter died importing it (a crash, not an exception)
    out="python exited with status $rc while importing torch / torchvision${out:+: $out}"; rc=1
  fi
  echo "$out"
  return $rc
}
_torch_probe() {
  "$PYTHON" - 2>/dev/null <<'PY'
import sys
def err(e):
    return " ".join(f"{type(e).__name__}: {e}".split())
try:
    import torch
except BaseException as e:
    print(err(e)); sys.exit(1)
try:
    import torchvision
except BaseException as e:
    print(err(e)); sys.exit(2)
v = getattr(torch, "version", None)
cuda, hip = getattr(v, "cuda", None), getattr(v, "hip", None)
build = f"CUDA-{cuda}" if cuda else f"ROCm-{hip}" if hip else "CPU"
print(torch.__version__, torchvision.__version__, build)
PY
}

# torch_dist_version NAME: the version pip has installed of NAME (empty when pip does not know it)
torch_dist_version() {
  "$PYTHON" -c 'import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except Exception: pass' "$1" 2>/dev/null
}

# torch_describe: one line naming the installed torch without importing it (importing takes
# seconds): its version and build (CUDA / ROCm / CPU, from torch/version.py) and its size on disk
# (the files pip lists for torch, torchvision and the CUDA libraries a CUDA build pulls in)
torch_describe() {
  "$PYTHON" - 2>/dev/null <<'PY'
import ast, importlib.metadata as md, importlib.util, os, re
def dist(name):
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None
def size(d):
    total = 0
    for f in d.files or []:
        if f.size is not None:  # RECORD lists sizes: no need to stat 15 000 files
            total += f.size
        else:
            try:
                total += os.stat(f.locate()).st_size
            except OSError:
                pass
    return total
def gb(n):
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"
spec = importlib.util.find_spec("torch")
if spec is None or not spec.submodule_search_locations:
    print("torch is not installed")
    raise SystemExit
root = list(spec.submodule_search_locations)[0]
info = {}
try:
    with open(os.path.join(root, "version.py"), encoding="utf-8") as f:
        for node in ast.parse(f.read()).body:
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if isinstance(target, ast.Name) and isinstance(getattr(node, "value", None), ast.Constant):
                info[target.id] = node.value.value
except (OSError, SyntaxError, ValueError):
    pass
t = dist("torch")
version = info.get("__version__") or (t.version if t else "?")
build = f"CUDA {info['cuda']}" if info.get("cuda") else f"ROCm {info['hip']}" if info.get("hip") else "CPU"
tv = dist("torchvision")
total, seen = 0, {"torch", "torchvision"}
if t is not None:
    total += size(t)
else:  # not installed by pip: its folder
    total += sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(root) for f in fs)
if tv is not None:
    total += size(tv)
todo, libs = list(t.requires or []) if t else [], 0
while todo:  # the CUDA libraries (nvidia-*, cuda-*, triton), followed through their requirements
    name = re.split(r"[ ;<>=!~\[(]", todo.pop().strip(), maxsplit=1)[0].lower().replace("_", "-")
    if name in seen or not re.match(r"(nvidia-|cuda-|triton)", name):
        continue
    seen.add(name)
    d = dist(name)
    if d is not None:
        libs += size(d)
        todo += list(d.requires or [])
what = "torch" + (" + torchvision" if tv else "") + (f" + CUDA libraries {gb(libs)}" if libs else "")
print(f"torch {version} ({build} build), torchvision {tv.version if tv else 'not installed'}; "
      f"{gb(total + libs)} on disk ({what})")
PY
}

# torch_line: the summary's line: the torch build in use, its size, and what install.sh did
torch_line() {
  local d; d="$(torch_describe)"
  [[ -n "$d" ]] || d="torch: cannot tell (describing it failed)"
  if [[ "$DO_PACKAGE" == 1 ]]; then
    echo "$d; imports; $TORCH_ACTION"
  else
    echo "$d (--no-package: not imported here; saa doctor checks it)"
  fi
}

# the versions installed when torch does not import: those of --constraints when it pins them
TORCH_PIN="torch==2.14.1"; TORCHVISION_PIN="torchvision==0.29.1"
if [[ -n "$CONSTRAINTS" ]]; then
  pin="$(grep -E '^[[:space:]]*torch[[:space:]]*==' "$CONSTRAINTS" | head -n 1 | tr -d '[:space:]')"
  [[ -n "$pin" ]] && TORCH_PIN="$pin"
  pin="$(grep -E '^[[:space:]]*torchvision[[:space:]]*==' "$CONSTRAINTS" | head -n 1 | tr -d '[:space:]')"
  [[ -n "$pin" ]] && TORCHVISION_PIN="$pin"
fi
TORCH_ACTION=""    # what install.sh did about torch (for the summary)
TORCH_KEEP_FILE="" # pip constraints that keep the torch in place during the package install

no_nvidia_gpu() { [[ "$(uname -s)" == Linux ]] && ! command -v nvidia-smi >/dev/null 2>&1 && [[ ! -e /proc/driver/nvidia ]]; }

# keep_torch NAME...: (re)write the pip constraints that pin the installed versions of NAME...
keep_torch() {
  local name v
  [[ -n "$TORCH_KEEP_FILE" ]] || { TORCH_KEEP_FILE="$(mktemp)"; TMP_FILES+=("$TORCH_KEEP_FILE"); }
  : > "$TORCH_KEEP_FILE"
  for name in "$@"; do
    v="$(torch_dist_version "$name")"
    [[ -n "$v" ]] && echo "$name==$v" >> "$TORCH_KEEP_FILE"
  done
  return 0
}

ensure_torch() {
  local probe rc=0 index=() where
  probe="$(torch_probe)" || rc=$?
  if [[ $rc == 0 ]]; then
    read -r tv tvv tb <<< "$probe"
    echo "==> torch ${tv} (${tb//-/ } build) and torchvision ${tvv} import: keeping them (install.sh never replaces an importable torch)"
    if [[ "$TORCH_CPU" == 1 && "$tb" != CPU ]]; then
      echo "    --cpu: not applied, this torch imports. To switch to the CPU build: $PYTHON -m pip uninstall -y torch torchvision, then bash install.sh --cpu"
    fi
    TORCH_ACTION="kept: it was installed before and imports"
    keep_torch torch torchvision
    return 0
  fi
  if [[ $rc == 2 ]]; then
    # torch imports, torchvision does not: install a torchvision for THIS torch, torch pinned
    local tv; tv="$(torch_dist_version torch)"
    echo "==> torch imports but torchvision does not: $probe"
    keep_torch torch
    where="PyPI"
    if [[ "$tv" == *+cpu || "$TORCH_CPU" == 1 ]]; then index=(--index-url "$TORCH_CPU_INDEX"); where="$TORCH_CPU_INDEX"; fi
    echo "==> installing torchvision (the version that matches torch ${tv:-?}, which is kept) from $where"
    local again=()
    [[ -n "$(torch_dist_version torchvision)" ]] && again=(--force-reinstall --no-deps)
    "$PYTHON" -m pip install ${again[@]+"${again[@]}"} -c "$TORCH_KEEP_FILE" ${index[@]+"${index[@]}"} torchvision \
      || die "pip could not install torchvision for the torch in place (see its message above); nothing was downloaded"
    keep_torch torch torchvision
    TORCH_ACTION="torch kept; torchvision installed by install.sh"
  else
    if [[ "$probe" == *"No module named 'torch'"* ]]; then
      echo "==> torch is not installed ($probe)"
    else
      echo "==> torch is installed but does NOT import: $probe"
    fi
    if [[ "$TORCH_CPU" == 1 ]]; then
      index=(--index-url "$TORCH_CPU_INDEX")
      echo "==> installing $TORCH_PIN $TORCHVISION_PIN: the CPU build (--cpu), from $TORCH_CPU_INDEX"
    else
      echo "==> installing $TORCH_PIN $TORCHVISION_PIN from PyPI (on Linux x86_64 the CUDA build: 6-7 GB with its CUDA libraries)"
      no_nvidia_gpu && echo "    no NVIDIA GPU found (no nvidia-smi): the CPU build is about 1 GB: stop now (Ctrl-C) and run bash install.sh --cpu"
    fi
    cpu_hint=""
    [[ "$TORCH_CPU" == 1 ]] && cpu_hint=" The CPU build comes from $TORCH_CPU_INDEX: if that index cannot be reached from here, set SAA_TORCH_CPU_INDEX to a mirror of it, or install torch yourself (any build that imports is kept)."
    # a torch that pip has installed but that does not import is installed again (pip would call it
    # "already satisfied"); only torch / torchvision themselves, their dependencies are left alone
    if [[ -n "$(torch_dist_version torch)" ]]; then
      "$PYTHON" -m pip install --force-reinstall --no-deps ${index[@]+"${index[@]}"} "$TORCH_PIN" "$TORCHVISION_PIN" \
        || die "pip could not install torch again (see its message above); nothing was downloaded.${cpu_hint} Fix that and run bash install.sh again"
    fi
    "$PYTHON" -m pip install ${index[@]+"${index[@]}"} "$TORCH_PIN" "$TORCHVISION_PIN" \
      || die "pip could not install torch (see its message above); nothing was downloaded.${cpu_hint} Fix that and run bash install.sh again"
    TORCH_ACTION="installed by install.sh$([[ "$TORCH_CPU" == 1 ]] && echo " (--cpu)")"
    keep_torch torch torchvision
  fi
  rc=0; probe="$(torch_probe)" || rc=$?
  [[ $rc == 0 ]] || die "torch was installed but still does not import: $probe"
}

# ------------------------------------------------------------------ package
if [[ "$DO_PACKAGE" == 1 ]]; then
  ensure_torch
  SPEC="."
  [[ -n "$EXTRAS" ]] && SPEC=".[${EXTRAS}]"
  PIP_C=()
  [[ -s "$TORCH_KEEP_FILE" ]] && PIP_C+=(-c "$TORCH_KEEP_FILE")
  [[ -n "$CONSTRAINTS" ]] && PIP_C+=(-c "$CONSTRAINTS")
  pinned="$(tr '\n' ' ' < "$TORCH_KEEP_FILE")"
  echo "==> pip install -e \"$SPEC\"${CONSTRAINTS:+ -c $CONSTRAINTS}${pinned:+ (torch pinned: ${pinned% })}"
  (cd "$HERE" && "$PYTHON" -m pip install ${PIP_C[@]+"${PIP_C[@]}"} -e "$SPEC") \
    || die "pip could not install the saa package with the torch in place (see its message above; install.sh never replaces an importable torch: if saa needs another one, install it yourself); nothing was downloaded. Fix that and run bash install.sh again"
fi

# is the package importable from anywhere (not only from this folder)?
PKG_VERSION="$(cd / && "$PYTHON" -m saa --version 2>/dev/null)" || PKG_VERSION=""

if [[ "$DO_WEIGHTS" != 1 ]]; then
  echo "==> --no-weights: skipping all downloads"
  if [[ -n "$PKG_VERSION" ]]; then
    echo "==> done: $PKG_VERSION is installed ($PYTHON). Model files: run bash install.sh --no-package"
    echo "    to download them; the lite method runs without them (saa demo --method lite)."
    echo "    torch: $(torch_line)"
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

# content_check FILE NAME [CONTENT_TYPE]: what the file's content says it is, by the kind its NAME
# ends in: never an HTML / XML page; .json parses (UTF-8); .safetensors has a valid header whose
# tensors cover the whole file; .pth / .pt / .bin / .ckpt is a PyTorch zip archive (with data.pkl)
# or a pickle; .txt / .py is UTF-8 text. Prints what is wrong and returns 1 otherwise.
CONTENT_CHECK=$(cat <<'PY'
import json, os, struct, sys, zipfile
path, name = sys.argv[1], sys.argv[2]
ctype = (sys.argv[3] if len(sys.argv) > 3 else "").strip()
served = f" (the server sent it as {ctype})" if ctype else ""
def fail(msg):
    print(msg + served)
    sys.exit(1)
size = os.path.getsize(path)
with open(path, "rb") as f:
    head = f.read(4096)
start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
if start.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<!--", b"<title", b"<h1", b"<error")) \
        or b"<html" in start[:1024]:
    fail("it is an HTML / XML page, not the model file: an error or login page of a proxy or mirror?")
kind = name.rsplit(".", 1)[-1].lower() if "." in os.path.basename(name) else ""
if kind in ("pth", "pt", "bin", "ckpt"):
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            fail(f"it is a truncated or damaged zip archive, not a complete PyTorch checkpoint ({e})")
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            fail("it is a zip archive without data.pkl, not a PyTorch checkpoint")
    elif not (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        fail(f"it is not a PyTorch checkpoint (neither a zip archive nor a pickle; it starts with {head[:12]!r})")
elif kind == "safetensors":
    if size < 10:
        fail(f"it is not a safetensors file ({size} bytes)")
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > min(size - 8, 100 << 20):
        fail(f"it is not a safetensors file (its first 8 bytes give a header of {n} bytes, the file has {size})")
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
        end = 0
        for key, t in header.items():
            if key == "__metadata__":
                continue
            a, b = t["data_offsets"]
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b):
                raise ValueError(f"bad data_offsets of {key}")
            end = max(end, b)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        fail(f"it is not a safetensors file (its header is not valid: {e})")
    if end != size - 8 - n:
        fail(f"it is a truncated or padded safetensors file (its header describes {end} bytes of tensors, the file "
             f"holds {size - 8 - n})")
elif kind == "json":
    if size > 512 << 20:
        fail(f"it is {size} bytes, too large for a JSON file of a model")
    try:
        with open(path, "rb") as f:
            json.loads(f.read().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        fail(f"it is not UTF-8 text, so not a JSON file ({e.reason} at byte {e.start})")
    except RecursionError:
        fail("it is not valid JSON (nested too deeply)")
    except ValueError as e:
        fail(f"it is not valid JSON ({e})")
elif kind in ("txt", "py"):
    with open(path, "rb") as f:
        data = f.read(64 << 20)
    if b"\x00" in data:
        fail("it is not a text file (it holds NUL bytes)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(data) < size and e.start >= len(data) - 4:
            pass  # a character cut by the read limit
        else:
            fail(f"it is not UTF-8 text ({e.reason} at byte {e.start})")
elif ctype.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
    fail("the server sent an HTML page, not the model file")
PY
)
content_check() { "$PYTHON" -c "$CONTENT_CHECK" "$@"; }

# check_file FILE NAME [SHA_OR_PREFIX] [SIZE] [CONTENT_TYPE]: non-empty, SIZE bytes (if given),
# sha256 starts with SHA (if given), and its content is what NAME says (content_check); prints
# what is wrong otherwise. The same check for a file just downloaded and for one already in place.
check_file() {
  local f="$1" name="$2" sha="${3:-}" size="${4:-}" ctype="${5:-}" why
  [[ -s "$f" ]] || { echo "it is empty"; return 1; }
  if [[ -n "$size" && "$size" != 0 ]]; then
    local have; have="$(wc -c < "$f" | tr -d ' ')"
    [[ "$have" == "$size" ]] || { echo "it has $have bytes, the hub lists $size"; return 1; }
  fi
  if [[ -n "$sha" ]]; then
    local sum; sum="$(sha256_of "$f")"
    [[ "$sum" == "$sha"* ]] || { echo "its sha256 is $sum, expected ${sha}..."; return 1; }
  fi
  why="$(content_check "$f" "$name" "$ctype" 2>&1)" || { echo "${why:-its content could not be checked}"; return 1; }
  return 0
}

# get NAME URL [SHA] [SIZE]: WEIGHTS_DIR/NAME from URL unless already in place (and passing
# check_file). Sets GOT_STATUS (present / downloaded / failed), GOT_NOTE and GOT_RC (curl's exit
# status); returns 0 when in place. A file that fails the check is removed.
get() {
  local name="$1" url="$2" sha="${3:-}" size="${4:-}"
  local dest="$WEIGHTS_DIR/$name" part="$WEIGHTS_DIR/$name.part" why rc=0 ctype removed=""
  GOT_STATUS=failed; GOT_NOTE=""; GOT_RC=0
  if [[ -e "$dest" ]]; then
    if why="$(check_file "$dest" "$name" "$sha" "$size")"; then
      echo "==> $name: already in place (checked)"
      GOT_STATUS=present; return 0
    fi
    echo "==> $name: the file in place is not right ($why); removed, downloading it again"
    rm -rf "$dest"
    removed="the file in place was not right ($why) and was removed; "
  fi
  mkdir -p "$(dirname "$dest")" || { GOT_NOTE="${removed}cannot create the folder $(dirname "$dest")"; return 1; }
  echo "==> downloading $name"
  echo "    from $url"
  ctype="$(curl -L -C - --fail --retry 2 --retry-delay 2 --connect-timeout "$CONNECT_TIMEOUT" \
       --speed-limit 1024 --speed-time "$STALL_TIMEOUT" "${PROGRESS[@]}" -w '%{content_type}' -o "$part" "$url")" || rc=$?
  GOT_RC=$rc
  if [[ $rc != 0 ]]; then
    GOT_NOTE="$(curl_reason "$rc")"
    if [[ -s "$part" ]]; then GOT_NOTE="$GOT_NOTE; partial data kept in $part, the next run resumes it"
    else rm -f "$part"; fi
    GOT_NOTE="${removed}${GOT_NOTE}"
    echo "    FAILED: $GOT_NOTE" >&2
    return 1
  fi
  if ! why="$(check_file "$part" "$name" "$sha" "$size" "$ctype")"; then
    rm -f "$part"
    GOT_NOTE="${removed}downloaded, but $why (removed)"
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
      # not downloaded, but a file in place is checked all the same (and removed when it fails)
      if in_place_ok "$WEIGHTS_DIR/$dir/$path" "$dir/$path"; then
        echo "==> $dir/$path: already in place (checked)"
        record "$dir/$path" present "$WEIGHTS_DIR/$dir/$path" "$HF_BASE_URL/$repo/resolve/main/$path"
      else
        record "$dir/$path" failed "$WEIGHTS_DIR/$dir/$path" "$HF_BASE_URL/$repo/resolve/main/$path" \
          "${IN_PLACE_NOTE}not tried: $skip"
      fi
      continue
    fi
    fetch "$dir/$path" "$HF_BASE_URL/$repo/resolve/main/$path"; rc=$?
    if [[ $rc != 0 ]] && unreachable "$GOT_RC"; then skip="the server could not be reached for $dir/${1}"; fi
  done
}

command -v curl >/dev/null 2>&1 || die "curl is needed to download the weights (install it, e.g. apt-get install curl)"
mkdir -p "$WEIGHTS_DIR" || die "cannot create the weights folder $WEIGHTS_DIR"
WEIGHTS_DIR="$(cd "$WEIGHTS_DIR" && pwd)"
TMP_ERR="$(mktemp)"; TMP_FILES+=("$TMP_ERR")
echo "==> weights folder: $WEIGHTS_DIR"

fetch "$SAM_FILE" "$SAM_BASE_URL/$SAM_FILE" "$SAM_SHA_PREFIX"
fetch "groundingdino_swint_ogc.pth" "$DINO_URL"

# in_place_ok PATH NAME: a file already in place that passes check_file (prints nothing); a file in
# place that fails is removed and IN_PLACE_NOTE says why (for its summary row)
in_place_ok() {
  local why
  IN_PLACE_NOTE=""
  [[ -e "$1" ]] || return 1
  if why="$(check_file "$1" "$2")"; then return 0; fi
  echo "==> $2: the file in place is not right ($why); removed"
  rm -rf "$1"
  IN_PLACE_NOTE="the file in place was not right ($why) and was removed; "
  return 1
}

# Grounding DINO config, from the installed package
DINO_CFG="$WEIGHTS_DIR/GroundingDINO_SwinT_OGC.py"
if in_place_ok "$DINO_CFG" "GroundingDINO_SwinT_OGC.py"; then
  echo "==> GroundingDINO_SwinT_OGC.py: already in place (checked)"
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
  record "GroundingDINO_SwinT_OGC.py" copied "$DINO_CFG" "groundingdino package (rf-groundingdino)" "${IN_PLACE_NOTE}copied from $out"
else
  record "GroundingDINO_SwinT_OGC.py" failed "$DINO_CFG" "groundingdino package (rf-groundingdino)" "${IN_PLACE_NOTE}$(echo "$out" | tail -n 1)"
fi

# text encoder: BERT from the hub (the only place a model hub is contacted: install time)
BERT_DIR="$WEIGHTS_DIR/bert-base-uncased"
# complete as a folder: every file but the weights, and the weights as safetensors or (an older
# install.sh's save_pretrained) pytorch_model.bin, each passing check_file
bert_complete() {
  local f w
  for f in "${BERT_FILES[@]}"; do
    [[ "$f" == model.safetensors ]] && continue
    check_file "$BERT_DIR/$f" "$f" >/dev/null || return 1
  done
  for w in model.safetensors pytorch_model.bin; do
    [[ -e "$BERT_DIR/$w" ]] && { check_file "$BERT_DIR/$w" "$w" >/dev/null; return; }
  done
  return 1
}
if bert_complete; then
  echo "==> bert-base-uncased/: already in place (every file checked)"
  record "bert-base-uncased/" present "$BERT_DIR" "$HF_BASE_URL/$BERT_REPO"
else
  # an older install's weights file that fails the check goes too (model.safetensors replaces it)
  in_place_ok "$BERT_DIR/pytorch_model.bin" "bert-base-uncased/pytorch_model.bin" || true
  hf_files "$BERT_REPO" "bert-base-uncased" "${BERT_FILES[@]}"
fi

# saliency backbone: timm's ImageNet weights (a safetensors file on the hub), saved as a plain
# state dict; the model is built first, so a wrong file is refused here, not at run time
WRN="$WEIGHTS_DIR/wide_resnet50_2.pth"
WRN_ST="wide_resnet50_2.safetensors"
WRN_HUB="timm/wide_resnet50_2.racm_in1k"  # timm's default weights of wide_resnet50_2 (asked below)
WRN_URL="$HF_BASE_URL/$WRN_HUB/resolve/main/model.safetensors"
if in_place_ok "$WRN" "wide_resnet50_2.pth"; then
  echo "==> wide_resnet50_2.pth: already in place (checked)"
  record "wide_resnet50_2.pth" present "$WRN" "$WRN_URL"
else
  WRN_NOTE="$IN_PLACE_NOTE"
  # the hub repository of timm's default weights (importing timm takes seconds: only when needed)
  hub="$("$PYTHON" -c 'import timm; print(timm.models.get_pretrained_cfg("wide_resnet50_2").hf_hub_id or "")' 2>/dev/null)"
  [[ -n "$hub" ]] && WRN_HUB="$hub" && WRN_URL="$HF_BASE_URL/$WRN_HUB/resolve/main/model.safetensors"
  if get "$WRN_ST" "$WRN_URL"; then
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
      record "wide_resnet50_2.pth" "$wrn_status" "$WRN" "$WRN_URL" "${WRN_NOTE}converted from the hub's model.safetensors"
    else
      record "wide_resnet50_2.pth" failed "$WRN" "$WRN_URL" \
        "${WRN_NOTE}downloaded, but cannot convert $WEIGHTS_DIR/$WRN_ST: $(echo "$out" | tail -n 1)" "$WEIGHTS_DIR/$WRN_ST"
    fi
  else
    record "wide_resnet50_2.pth" failed "$WRN" "$WRN_URL" "${WRN_NOTE}${GOT_NOTE}" "$WEIGHTS_DIR/$WRN_ST"
  fi
fi

[[ -n "$SAM_HQ" ]] && hf_files "$SAM_HQ_REPO" "sam_hq_$SAM_HQ"
[[ -n "$SAM2" ]] && hf_files "$SAM2_REPO" "sam2.1_hiera_$SAM2"

# record the folder for saa, for this clone (saa.settings needs pydantic: the package's dependencies)
if SETTINGS_MSG="$(cd "$HERE" && "$PYTHON" -m saa.settings --record-weights-dir "$WEIGHTS_DIR" --clone "$HERE" 2>&1)"; then
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
echo "torch:    $(torch_line)"
if [[ "$SETTINGS_OK" == 1 ]]; then
  echo "weights:  $WEIGHTS_DIR ($SETTINGS_MSG; saa finds the files from any folder)"
else
  echo "weights:  $WEIGHTS_DIR (could not record it: $(echo "$SETTINGS_MSG" | tail -n 1); set SAA_WEIGHTS_DIR=$WEIGHTS_DIR instead)"
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
  - retry only the downloads (partial files resume; files in place are kept when they pass the checks):
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

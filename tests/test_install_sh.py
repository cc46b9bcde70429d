"""install.sh: every download tried and checked, one summary, the exit codes, the settings file
it records, and the torch it keeps.

Nothing here touches the real home folder, the network or the Python environment: HOME /
XDG_CONFIG_HOME point into tmp_path, the mirror variables point at 127.0.0.1 (a closed port, or a
local HTTP server serving stand-in files), and the torch tests run install.sh with a `python`
whose `-m pip` only logs (tests/test_install_sh_torch.py).
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

INSTALL = REPO / "install.sh"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, curl fails at once

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                                reason="install.sh needs bash and curl")

# a stand-in SAM ViT-B checkpoint: a PyTorch-style zip archive (standin/data.pkl, a pickled dict)
# whose zip comment was chosen so that its sha256 starts with 01ec64, the prefix install.sh checks
SAM_B_STANDIN = base64.b64decode(
    "UEsDBBQAAAAAAAAAIVDStscoOgAAADoAAAAQAAAAc3RhbmRpbi9kYXRhLnBrbIACfXEAWBMAAABzYWEgaW5zdGFsbC5zaCB0ZXN0cQFYEgAA"
    "AFNBTSBWaVQtQiBzdGFuZC1pbnECcy5QSwECFAMUAAAAAAAAACFQ0rbHKDoAAAA6AAAAEAAAAAAAAAAAAAAAgAEAAAAAc3RhbmRpbi9kYXRh"
    "LnBrbFBLBQYAAAAAAQABAD4AAABoAAAACAAwMGJhMGNhYw==")
BERT_FILES = ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]
#: what a proxy or mirror answers, with status 200, instead of the file
ERROR_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Access denied</title></head>\n"
              b"<body><h1>Please log in to the proxy</h1></body></html>\n")


def pth_bytes(tag: str) -> bytes:
    """A small real PyTorch checkpoint (torch.save: a zip archive with data.pkl)."""
    import torch

    buf = io.BytesIO()
    torch.save({"stand-in": torch.zeros(2), "tag": tag}, buf)
    return buf.getvalue()


def safetensors_bytes(tensors: dict[str, int]) -> bytes:
    """A valid safetensors file of float32 zeros: name -> number of elements."""
    header, offset = {}, 0
    for name, n in tensors.items():
        header[name] = {"dtype": "F32", "shape": [n], "data_offsets": [offset, offset + 4 * n]}
        offset += 4 * n
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def bert_standins() -> dict[str, bytes]:
    return {
        "config.json": json.dumps({"model_type": "bert", "hidden_size": 8}).encode(),
        "vocab.txt": "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "crack"]).encode() + b"\n",
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "WordPiece"}}).encode(),
        "tokenizer_config.json": json.dumps({"do_lower_case": True}).encode(),
        "model.safetensors": safetensors_bytes({"embeddings.weight": 6}),
    }


def test_sam_standin_is_a_checkpoint_with_the_checked_prefix():
    assert hashlib.sha256(SAM_B_STANDIN).hexdigest().startswith("01ec64")
    with zipfile.ZipFile(io.BytesIO(SAM_B_STANDIN)) as z:
        assert z.namelist() == ["standin/data.pkl"]


def _env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    for k in ("SAA_SETTINGS", "SAA_WEIGHTS_DIR", "SAA_SAM_BASE_URL", "SAA_GROUNDINGDINO_URL", "SAA_HF_BASE_URL"):
        env.pop(k, None)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHON=sys.executable,
               PYTHONPATH=str(REPO), SAA_CONNECT_TIMEOUT="5", SAA_STALL_TIMEOUT="10")
    env.update(extra)
    return env


def _install(tmp_path: Path, *args: str, **env) -> subprocess.CompletedProcess:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(["bash", str(INSTALL), *args], cwd=cwd, env=_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=300)


def _rows(stdout: str) -> dict[str, str]:
    """FILE -> STATUS of the summary table."""
    table = stdout.split("= summary", 1)[1]
    rows = {}
    for line in table.splitlines():
        m = re.match(r"^  (present|downloaded|copied|converted|FAILED)\s+(\S+)\s+(\S+)", line)
        if m:
            rows[m.group(2)] = m.group(1)
    return rows


def test_help_documents_exit_codes_and_mirrors():
    r = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for word in ("Exit status", "  3  ", "--no-package", "SAA_SAM_BASE_URL", "SAA_GROUNDINGDINO_URL",
                 "SAA_HF_BASE_URL", "SAA_CONNECT_TIMEOUT", "settings.json", "--cpu",
                 "https://download.pytorch.org/whl/cpu", "never replaced", "HTML", "removed"):
        assert word in r.stdout, word
    r = subprocess.run(["bash", str(INSTALL), "--sam", "vit_x"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "--sam must be" in r.stderr


def test_no_network_every_download_tried_then_summary_exit_3(tmp_path):
    weights = tmp_path / "w"
    t0 = time.monotonic()
    r = _install(tmp_path, "--no-package", "--weights-dir", str(weights),
                 SAA_SAM_BASE_URL=CLOSED, SAA_GROUNDINGDINO_URL=f"{CLOSED}/groundingdino_swint_ogc.pth",
                 SAA_HF_BASE_URL=CLOSED)
    took = time.monotonic() - t0
    assert r.returncode == 3, r.stdout + r.stderr
    assert took < 120  # fails fast: a refused connection is not retried until a timeout
    out = r.stdout
    rows = _rows(out)
    # every download was tried and is listed (not only the first), each with its path and URL
    assert rows["sam_vit_h_4b8939.pth"] == "FAILED"
    assert rows["groundingdino_swint_ogc.pth"] == "FAILED"
    assert rows["wide_resnet50_2.pth"] == "FAILED"
    assert all(rows[f"bert-base-uncased/{f}"] == "FAILED" for f in BERT_FILES)
    assert rows["GroundingDINO_SwinT_OGC.py"] == "copied"  # local: copied from the groundingdino package
    assert (weights / "GroundingDINO_SwinT_OGC.py").is_file()
    assert str(weights / "sam_vit_h_4b8939.pth") in out and f"from {CLOSED}/sam_vit_h_4b8939.pth" in out
    assert "cannot connect to the server" in out
    assert "downloading wide_resnet50_2.safetensors" in out  # tried after the others had failed
    # plain words: installed and usable, what works without the files, how to go on
    assert "IS installed and usable" in out and "saa demo --method lite" in out
    assert f"--no-package --weights-dir {weights}" in out
    assert "SAA_SAM_BASE_URL" in out and "by hand" in out
    assert f"{weights}/wide_resnet50_2.safetensors\n            <- {CLOSED}/timm/" in out
    assert "exit status 3" in out
    assert not list(weights.glob("*.part"))  # nothing half-written left from refused connections
    assert not (weights / "bert-base-uncased").exists()  # no empty folder that could pass for the model
    # the folder is recorded in the per-user settings file (under the fake home)
    settings = tmp_path / "home" / ".config" / "saa" / "settings.json"
    # ... for this clone (the repository install.sh sits in), and as the latest, user-wide record
    assert json.loads(settings.read_text()) == {"weights_dir": str(weights), "recorded_by": str(REPO),
                                                "clones": {str(REPO): str(weights)}}
    assert f"weights:  {weights} (recorded for the clone {REPO} in {settings}" in out
    assert re.search(r"^torch:    torch \S+ \((CPU|CUDA \S+|ROCm \S+) build\), torchvision \S+; [0-9.]+ [GM]B on disk",
                     out, re.M), out

    # the package is usable afterwards, and finds the (missing) files in the recorded folder
    env = _env(tmp_path)
    v = subprocess.run([sys.executable, "-m", "saa", "--version"], env=env, capture_output=True, text=True,
                       cwd=tmp_path / "elsewhere", timeout=60)
    assert v.returncode == 0 and v.stdout.startswith("saa ")
    d = subprocess.run([sys.executable, "-m", "saa", "doctor"], env=env, capture_output=True, text=True,
                       cwd=tmp_path / "elsewhere", timeout=120)
    assert d.returncode == 3, d.stdout + d.stderr
    for name in ("sam_vit_h_4b8939.pth", "bert-base-uncased", "groundingdino_swint_ogc.pth", "wide_resnet50_2.pth"):
        assert f"MISSING  {weights}/{name}" in d.stdout, name
    assert f"1. {weights}  [settings file {settings}, recorded by this clone's install.sh; exists]" in d.stdout
    assert f"  weights folder {weights}  recorded by the clone {REPO} (this one); the latest record" in d.stdout


class _Mirror(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    listing: dict[str, list]
    content_types: dict[str, str]


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):
        srv: _Mirror = self.server  # type: ignore[assignment]
        path = self.path.split("?", 1)[0]
        m = re.match(r"^/api/models/(.+)/tree/main$", path)
        if m and m.group(1) in srv.listing:
            body = json.dumps(srv.listing[m.group(1)]).encode()
        elif path in srv.files:
            body = srv.files[path]
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if path in srv.content_types:
            self.send_header("Content-Type", srv.content_types[path])
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def mirror():
    srv = _Mirror(("127.0.0.1", 0), _Handler)
    srv.files, srv.listing, srv.content_types = {}, {}, {}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_local_mirror_downloads_checks_and_exit_0(tmp_path, mirror):
    base = f"http://127.0.0.1:{mirror.server_address[1]}"
    bert = bert_standins()
    mirror.files.update({
        "/sam/sam_vit_b_01ec64.pth": SAM_B_STANDIN,
        "/dino.pth": pth_bytes("grounding dino"),
        # a valid safetensors file, but not wide_resnet50_2's tensors: refused when converted
        "/timm/wide_resnet50_2.racm_in1k/resolve/main/model.safetensors": safetensors_bytes({"fc.weight": 4}),
    })
    # the hub listing gives a size for the small files and a sha256 for the LFS one
    listing = []
    for f, body in bert.items():
        entry = {"type": "file", "path": f, "size": len(body)}
        if f == "model.safetensors":
            entry["lfs"] = {"oid": hashlib.sha256(body).hexdigest(), "size": len(body)}
        listing.append(entry)
        served = body if f != "tokenizer_config.json" else body + b"truncated?"  # size differs: refused
        mirror.files[f"/google-bert/bert-base-uncased/resolve/main/{f}"] = served
    mirror.listing["google-bert/bert-base-uncased"] = listing
    weights = tmp_path / "w"
    env = dict(SAA_SAM_BASE_URL=f"{base}/sam", SAA_GROUNDINGDINO_URL=f"{base}/dino.pth", SAA_HF_BASE_URL=base)

    r = _install(tmp_path, "--no-package", "--weights-dir", str(weights), "--sam", "vit_b", **env)
    assert r.returncode == 3, r.stdout + r.stderr
    rows = _rows(r.stdout)
    assert rows["sam_vit_b_01ec64.pth"] == "downloaded"
    assert (weights / "sam_vit_b_01ec64.pth").read_bytes() == SAM_B_STANDIN
    assert rows["groundingdino_swint_ogc.pth"] == "downloaded"
    assert rows["bert-base-uncased/model.safetensors"] == "downloaded"
    assert rows["bert-base-uncased/tokenizer_config.json"] == "FAILED"
    assert "the hub lists" in r.stdout and not (weights / "bert-base-uncased" / "tokenizer_config.json").exists()
    # a wrong wide_resnet50_2 file is refused when converted (not at run time), and kept for a look
    assert rows["wide_resnet50_2.pth"] == "FAILED" and "cannot convert" in r.stdout
    assert not (weights / "wide_resnet50_2.pth").exists()
    assert f"--no-package --weights-dir {weights} --sam vit_b" in r.stdout

    # fixed on the server; the saliency weights placed by hand: a rerun completes, exit 0
    (weights / "wide_resnet50_2.pth").write_bytes(pth_bytes("placed by hand"))
    mirror.files.clear()  # files in place are not downloaded again ...
    mirror.files["/google-bert/bert-base-uncased/resolve/main/tokenizer_config.json"] = bert["tokenizer_config.json"]
    r = _install(tmp_path, "--no-package", "--weights-dir", str(weights), "--sam", "vit_b", **env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(r.stdout)
    assert rows["sam_vit_b_01ec64.pth"] == "present" and rows["groundingdino_swint_ogc.pth"] == "present"
    assert rows["bert-base-uncased/tokenizer_config.json"] == "downloaded"
    assert rows["bert-base-uncased/config.json"] == "present"
    assert rows["wide_resnet50_2.pth"] == "present"
    assert "FAILED" not in r.stdout and "files above are in place" in r.stdout

    # a third run: the BERT folder is complete as a whole (no hub contact at all)
    mirror.files.clear()
    mirror.listing.clear()
    r = _install(tmp_path, "--no-package", "--weights-dir", str(weights), "--sam", "vit_b", **env)
    assert r.returncode == 0 and _rows(r.stdout)["bert-base-uncased/"] == "present"


def test_error_pages_are_failed_removed_and_never_present(tmp_path, mirror):
    """A proxy answers 200 with an HTML page for the Grounding DINO checkpoint (no checksum is
    published for it) and for a BERT file (the hub listing cannot be read: no size or sha256
    either): each is FAILED with the reason and removed, on the first run and on the retry."""
    base = f"http://127.0.0.1:{mirror.server_address[1]}"
    bert = bert_standins()
    mirror.files.update({"/sam/sam_vit_b_01ec64.pth": SAM_B_STANDIN, "/dino.pth": ERROR_PAGE,
                         "/timm/wide_resnet50_2.racm_in1k/resolve/main/model.safetensors": ERROR_PAGE})
    mirror.content_types.update({"/dino.pth": "text/html; charset=utf-8"})
    for f, body in bert.items():
        mirror.files[f"/google-bert/bert-base-uncased/resolve/main/{f}"] = ERROR_PAGE if f == "config.json" else body
    # no listing: /api/models/.../tree/main answers 404, so the BERT files have no published size or sha256
    weights = tmp_path / "w"
    env = dict(SAA_SAM_BASE_URL=f"{base}/sam", SAA_GROUNDINGDINO_URL=f"{base}/dino.pth", SAA_HF_BASE_URL=base)
    retry = ("--no-package", "--weights-dir", str(weights), "--sam", "vit_b")

    for attempt in (1, 2):  # the first run, then the retry the summary recommends
        r = _install(tmp_path, *retry, **env)
        assert r.returncode == 3, r.stdout + r.stderr
        rows = _rows(r.stdout)
        assert rows["groundingdino_swint_ogc.pth"] == "FAILED", attempt
        assert rows["bert-base-uncased/config.json"] == "FAILED", attempt
        assert rows["wide_resnet50_2.pth"] == "FAILED", attempt
        assert ("downloaded, but it is an HTML / XML page, not the model file: an error or login page of a proxy or "
                "mirror? (the server sent it as text/html; charset=utf-8) (removed)") in r.stdout
        assert r.stdout.count("it is an HTML / XML page") >= 3
        assert not (weights / "groundingdino_swint_ogc.pth").exists()
        assert not (weights / "bert-base-uncased" / "config.json").exists()
        assert not (weights / "wide_resnet50_2.safetensors").exists()
        assert not list(weights.rglob("*.part"))
        # the good files are kept and, on the retry, present
        want = "downloaded" if attempt == 1 else "present"
        assert rows["sam_vit_b_01ec64.pth"] == want and rows["bert-base-uncased/vocab.txt"] == want
        assert rows["bert-base-uncased/model.safetensors"] == want

    # what an older install.sh kept: error pages at the files' paths. A retry with the server
    # unreachable removes them and lists them FAILED, never "present"
    (weights / "groundingdino_swint_ogc.pth").write_bytes(ERROR_PAGE)
    (weights / "bert-base-uncased" / "config.json").write_bytes(ERROR_PAGE)
    (weights / "bert-base-uncased" / "tokenizer.json").write_bytes(b"<html>502 Bad Gateway</html>")
    (weights / "wide_resnet50_2.pth").write_bytes(ERROR_PAGE)
    r = _install(tmp_path, *retry, SAA_SAM_BASE_URL=CLOSED, SAA_GROUNDINGDINO_URL=f"{CLOSED}/dino.pth",
                 SAA_HF_BASE_URL=CLOSED)
    assert r.returncode == 3, r.stdout + r.stderr
    rows = _rows(r.stdout)
    for name in ("groundingdino_swint_ogc.pth", "bert-base-uncased/config.json", "bert-base-uncased/tokenizer.json",
                 "wide_resnet50_2.pth"):
        assert rows[name] == "FAILED", name
        assert not (weights / name).exists(), name
    assert "bert-base-uncased/" not in rows  # the folder as a whole is not called present
    assert ("the file in place was not right (it is an HTML / XML page, not the model file: an error or login page of a "
            "proxy or mirror?) and was removed; cannot connect to the server") in r.stdout
    present = {k for k, v in rows.items() if v == "present"}
    assert present == {"sam_vit_b_01ec64.pth", "GroundingDINO_SwinT_OGC.py", "bert-base-uncased/vocab.txt",
                       "bert-base-uncased/tokenizer_config.json", "bert-base-uncased/model.safetensors"}


def test_content_checks_of_each_kind(tmp_path, mirror):
    """Without published checksums every kind of file is still checked by its content: a truncated
    checkpoint archive, a zip that is no checkpoint, JSON that does not parse, a safetensors file cut
    short or with a bad header, a binary vocab.txt -- each FAILED with its reason and removed."""
    base = f"http://127.0.0.1:{mirror.server_address[1]}"
    good_pth = pth_bytes("dino")
    st = bert_standins()["model.safetensors"]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("readme.txt", "not a checkpoint")
    served = {
        "config.json": b'{"model_type": "bert",',                       # cut short
        "vocab.txt": b"\x00\x01\x02binary",                             # not text
        "tokenizer.json": b"Service Unavailable",                       # plain-text error message
        "tokenizer_config.json": zipped.getvalue(),                     # valid JSON? no: a zip
        "model.safetensors": st[:-8],                                   # truncated
    }
    mirror.files.update({"/dino.pth": good_pth[: len(good_pth) // 2],  # a checkpoint archive cut in half
                         "/timm/wide_resnet50_2.racm_in1k/resolve/main/model.safetensors":
                             struct.pack("<Q", 10 ** 12) + b"{}"})  # a header longer than the file
    for f, body in served.items():
        mirror.files[f"/google-bert/bert-base-uncased/resolve/main/{f}"] = body
    weights = tmp_path / "w"
    r = _install(tmp_path, "--no-package", "--weights-dir", str(weights), "--sam", "vit_b",
                 SAA_SAM_BASE_URL=CLOSED, SAA_GROUNDINGDINO_URL=f"{base}/dino.pth", SAA_HF_BASE_URL=base)
    assert r.returncode == 3, r.stdout + r.stderr
    rows = _rows(r.stdout)
    out = r.stdout
    assert rows["groundingdino_swint_ogc.pth"] == "FAILED"
    assert "it is a truncated or damaged zip archive, not a complete PyTorch checkpoint" in out
    assert all(rows[f"bert-base-uncased/{f}"] == "FAILED" for f in BERT_FILES)
    assert "it is not valid JSON (Expecting" in out
    assert "it is not a text file (it holds NUL bytes)" in out
    assert "it is a truncated or padded safetensors file (its header describes 24 bytes of tensors, the file holds 16)" in out
    assert rows["wide_resnet50_2.pth"] == "FAILED"
    assert "it is not a safetensors file (its first 8 bytes give a header of 1000000000000 bytes" in out
    assert not (weights / "bert-base-uncased").exists() and not (weights / "groundingdino_swint_ogc.pth").exists()
    assert not list(weights.rglob("*.part"))

    # the same checks apply to files put in place by hand: a pickle-format checkpoint passes, a zip
    # without data.pkl does not
    (weights / "groundingdino_swint_ogc.pth").write_bytes(b"\x80\x02}q\x00.")
    (weights / "wide_resnet50_2.pth").write_bytes(zipped.getvalue())
    r = _install(tmp_path, "--no-package", "--weights-dir", str(weights), "--sam", "vit_b",
                 SAA_SAM_BASE_URL=CLOSED, SAA_GROUNDINGDINO_URL=f"{CLOSED}/dino.pth", SAA_HF_BASE_URL=CLOSED)
    rows = _rows(r.stdout)
    assert rows["groundingdino_swint_ogc.pth"] == "present"
    assert rows["wide_resnet50_2.pth"] == "FAILED"
    assert "it is a zip archive without data.pkl, not a PyTorch checkpoint" in r.stdout
    assert not (weights / "wide_resnet50_2.pth").exists()


def test_no_weights_exits_0_without_downloading(tmp_path):
    r = _install(tmp_path, "--no-package", "--no-weights", SAA_SAM_BASE_URL=CLOSED)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipping all downloads" in r.stdout and "downloading" not in r.stdout
    assert not (tmp_path / "home" / ".config" / "saa" / "settings.json").exists()

"""Safe, explicit checkpoint loading shared by the model wrappers."""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import INSTALL_HINT, CheckpointError


def require_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{what} not found: {p}\n  {INSTALL_HINT} (or point the config at your file)")
    if p.is_dir():
        raise CheckpointError(f"{what} should be a file but is a folder: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} is empty (0 bytes): {p}\n  delete it and {INSTALL_HINT}")
    return p


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointError(f"{what} folder not found: {p}\n  {INSTALL_HINT} (or point the config at your folder)")
    return p


# Official file names whose sha256 is known (SAM names carry the first 6 hex digits of it).
KNOWN_SHA256_PREFIX = {
    "sam_vit_h_4b8939.pth": "4b8939",
    "sam_vit_l_0b3195.pth": "0b3195",
    "sam_vit_b_01ec64.pth": "01ec64",
}


def verify_known_checksum(p: Path) -> None:
    """For a file with an official name, check its sha256 (once: the result is remembered in a
    ``<file>.sha256`` sidecar keyed by size and modification time)."""
    prefix = KNOWN_SHA256_PREFIX.get(p.name)
    if prefix is None:
        return
    st = p.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    side = p.with_name(p.name + ".sha256")
    try:
        cached = side.read_text().split("\n")
        if len(cached) >= 2 and cached[1] == stamp:
            digest = cached[0]
        else:
            raise OSError
    except OSError:
        digest = sha256_file(p)
        try:
            side.write_text(f"{digest}\n{stamp}\n")
        except OSError:
            pass
    if not digest.startswith(prefix):
        raise CheckpointError(
            f"{p}: sha256 {digest[:12]}... does not match the official file (expected {prefix}...): the "
            f"download is corrupt or the file was replaced. Delete it and {INSTALL_HINT}.")


def load_state_dict(path: str | Path, what: str) -> dict[str, Any]:
    """``torch.load(..., weights_only=True)`` with clear errors; never executes pickled code."""
    p = require_file(path, what)
    verify_known_checksum(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{what} {p} was refused by the safe loader (weights_only=True): it contains "
            f"objects other than tensors, which could run code when loaded. Only plain state dicts "
            f"are accepted. ({str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{what} {p} cannot be read: the file is truncated or corrupt "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Delete it and {INSTALL_HINT}."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {p} does not hold a state dict (found {type(obj).__name__})")
    return obj


def check_tokenizer(folder: str | Path, tokenizer) -> None:
    """A text-encoder folder whose tokenizer files disagree with its ``vocab.txt`` (e.g. written by
    transformers 5's ``BertTokenizerFast(vocab_file=...)``, which ignores the file) would turn every
    word into [UNK]: refuse it with the folder's name."""
    vocab = Path(folder) / "vocab.txt"
    if not vocab.is_file():
        return
    n = sum(1 for _ in vocab.open(encoding="utf-8"))
    if len(tokenizer) < n:
        raise CheckpointError(
            f"tokenizer of {folder} has {len(tokenizer)} tokens but its vocab.txt has {n}: the tokenizer files "
            f"(tokenizer.json) were not built from vocab.txt; rebuild them (saa.testing.write_bert_tokenizer) "
            f"or {INSTALL_HINT}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"models.device is '{device}' but CUDA is not available here; use 'cpu' or 'auto'")
    return d

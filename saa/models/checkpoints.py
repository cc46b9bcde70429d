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


def load_state_dict(path: str | Path, what: str) -> dict[str, Any]:
    """``torch.load(..., weights_only=True)`` with clear errors; never executes pickled code."""
    p = require_file(path, what)
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

"""Safe, explicit checkpoint loading shared by the model wrappers."""
from __future__ import annotations

import hashlib
import io
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


def safe_globals() -> list:
    """The explicit allow-list of non-tensor types that official checkpoints carry besides their
    tensors and that :func:`load_state_dict` accepts under ``weights_only=True``: an
    ``argparse.Namespace`` of training arguments (a plain attribute bag; its values are still
    unpickled by the restricted loader) and numpy scalars / dtypes (e.g. a best metric saved as
    ``np.float64``). Plain ints, floats, strings, lists, dicts (an epoch number, an optimizer or
    scheduler state) need no allow-listing. Nothing that runs code when constructed is listed."""
    import argparse

    allowed: list = [argparse.Namespace]
    try:
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        allowed.append(core.multiarray.scalar)
        allowed.append(np.dtype)
        dtypes = getattr(np, "dtypes", None)
        if dtypes is not None:
            allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    except (ImportError, AttributeError):  # pragma: no cover - numpy is a dependency
        pass
    return allowed


def load_state_dict(path: str | Path, what: str) -> dict[str, Any]:
    """``torch.load(..., weights_only=True)`` with :func:`safe_globals` allowed and clear errors;
    never executes pickled code. A file refused by the safe loader is reported with the entry that
    holds the refused object (e.g. ``entry 'args' holds a mypackage.Config``)."""
    p = require_file(path, what)
    verify_known_checksum(p)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{what} {p}: {_refusal(p, e)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{what} {p} cannot be read: the file is truncated or corrupt "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Delete it and {INSTALL_HINT}."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {p} does not hold a state dict (found {type(obj).__name__})")
    return obj


def _refusal(p: Path, err: Exception) -> str:
    """One line: which entry of the file holds which refused type."""
    names: list[str] = []
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
    except Exception:  # noqa: BLE001 - only used to word the message
        pass
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in safe_globals()}
    names = [n for n in names if n not in allowed]
    entries = _entries_holding(p, set(names)) if names else {}
    if entries:
        parts = [f"entry '{k}' holds {', '.join(sorted(v))}" for k, v in entries.items()]
        where = "; ".join(parts)
    elif names:
        where = f"it holds {', '.join(names)}"
    else:
        where = str(err).splitlines()[0] if str(err) else "it holds objects other than tensors"
    return (f"refused by the safe loader (weights_only=True): {where}, which is not on saa's allow-list "
            f"(tensors, numbers, strings, lists, dicts, argparse.Namespace, numpy scalars) because "
            f"unpickling it could run code; re-save the file with only its tensors "
            f"(torch.save({{'model': state_dict}}, ...))")


def _entries_holding(p: Path, names: set[str]) -> dict[str, set[str]]:
    """Top-level keys (dotted one level further for nested dicts) of a zip-format checkpoint whose
    value contains an object of one of the global ``names``, found by unpickling ``data.pkl`` with
    every global replaced by an inert placeholder (nothing of the file is executed)."""

    class Inert(dict):
        global_name = None

        def __init__(self, *a, **k):
            pass

        def __setstate__(self, state):
            self.state = state

    def marker(full: str):
        return type("Marked", (Inert,), {"global_name": full})

    class Scan(pickle.Unpickler):
        def find_class(self, module, name):
            full = f"{module}.{name}"
            return marker(full if full in names else None)  # a class: REDUCE and NEWOBJ both work

        def persistent_load(self, pid):
            return None

    try:
        with zipfile.ZipFile(p) as z:
            pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
            root = Scan(io.BytesIO(z.read(pkl))).load()
    except Exception:  # noqa: BLE001 - legacy format or unreadable: the caller words it without entries
        return {}

    def found(obj, depth=0) -> set[str]:
        if depth > 50:
            return set()
        out: set[str] = set()
        if isinstance(obj, Inert) and obj.global_name:
            out.add(obj.global_name)
        if isinstance(obj, dict):
            for v in obj.values():
                out |= found(v, depth + 1)
        elif isinstance(obj, (list, tuple, set)):
            for v in obj:
                out |= found(v, depth + 1)
        if isinstance(obj, Inert) and hasattr(obj, "state"):
            out |= found(obj.state, depth + 1)
        return out

    result: dict[str, set[str]] = {}
    if isinstance(root, dict) and not isinstance(root, Inert):
        for k, v in root.items():
            hit = found(v)
            if hit:
                sub = [f"{k}.{kk}" for kk, vv in v.items() if found(vv)] if isinstance(v, dict) and not isinstance(v, Inert) else []
                for key in (sub or [str(k)]):
                    result[key] = hit
    return result


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

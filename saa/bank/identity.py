"""Identities: of an image (its file's bytes and its decoded pixels), of a model file (a cheap
content digest), and of a method (:func:`method_record`); :func:`method_mismatch` says in one line
what differs between a bank and the method that wants to use it."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .records import MethodRecord, ModelFileRecord

__all__ = ["file_sha256", "pixels_sha256", "model_file_record", "method_record", "method_mismatch", "MIB"]

MIB = 1 << 20
#: a model folder is digested over at most this many files
MAX_FOLDER_FILES = 10_000


def file_sha256(path: os.PathLike | str) -> tuple[str, int]:
    """(SHA-256 of the file's bytes, its size)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(4 * MIB)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def pixels_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of a decoded image: its shape, dtype and pixel bytes (the same picture saved in
    another file or format gets the same value)."""
    a = np.ascontiguousarray(rgb)
    h = hashlib.sha256(f"{a.dtype.str}:{'x'.join(map(str, a.shape))}:".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _head_tail(path: Path, size: int) -> str:
    """SHA-256 of the size, the first MiB and the last MiB of a file."""
    h = hashlib.sha256(f"size:{size}:".encode())
    with open(path, "rb") as f:
        h.update(f.read(MIB))
        if size > MIB:
            f.seek(max(MIB, size - MIB))
            h.update(f.read(MIB))
    return h.hexdigest()


def _resolve(method, configured: str) -> Path:
    if configured.startswith("package:"):
        from ..models.features import resolve_weights

        try:
            return Path(resolve_weights(configured))
        except Exception:  # a package that is not installed: recorded as missing
            return Path(configured)
    return Path(method.config.resolve_path(configured))


def model_file_record(method, what: str, configured: str) -> ModelFileRecord:
    """The identity of one model file (or folder) of ``method`` as configured now."""
    path = _resolve(method, str(configured))
    try:
        if path.is_file():
            size = path.stat().st_size
            return ModelFileRecord(what=what, path=str(configured), resolved=str(path), kind="file", size=size,
                                   digest=_head_tail(path, size))
        if path.is_dir():
            h = hashlib.sha256()
            total = count = 0
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    p = Path(root) / name
                    if not p.is_file():
                        continue
                    count += 1
                    if count > MAX_FOLDER_FILES:
                        break
                    size = p.stat().st_size
                    total += size
                    h.update(f"{p.relative_to(path).as_posix()}\0{_head_tail(p, size)}\n".encode("utf-8", "replace"))
            return ModelFileRecord(what=what, path=str(configured), resolved=str(path), kind="folder", size=total,
                                   digest=h.hexdigest())
    except OSError:
        pass
    return ModelFileRecord(what=what, path=str(configured), resolved=str(path), kind="missing", size=0, digest="")


def method_record(method, category: str) -> MethodRecord:
    """What the bank records of ``method`` for ``category``: name, fingerprint without references,
    typed settings, described settings, ``out_size`` and the identity of each model file (Method
    API only)."""
    desc = method.describe() or {}
    return MethodRecord(
        name=str(method.name), label=str(method.label),
        fingerprint=str(method.fingerprint(category, None)),
        settings=method.settings.model_dump(mode="json"),
        described={str(k): _jsonable(v) for k, v in dict(desc.get("settings") or {}).items()},
        out_size=int(method.config.out_size),
        model_files=[model_file_record(method, f.what, f.path) for f in method.model_files()],
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def _short(v: Any, n: int = 60) -> str:
    t = repr(v)
    return t if len(t) <= n else t[: n - 3] + "..."


def _model_file_text(r: ModelFileRecord) -> str:
    if r.kind == "missing":
        return f"{r.resolved} (missing)"
    return f"{r.resolved} ({r.kind}, {r.size} bytes, digest {r.digest[:12]})"


def method_mismatch(bank: MethodRecord, now: MethodRecord, where: str) -> Optional[str]:
    """None when ``now`` (the method that wants to use the bank) makes the same features as the
    bank's; otherwise one line naming the first difference."""
    if bank.name != now.name:
        return (f"{where} was built with method {bank.name!r} ({bank.label}), not {now.name!r}: "
                f"use --method {bank.name} or build a bank with this method")
    for key in sorted(set(bank.settings) | set(now.settings)):
        a, b = bank.settings.get(key, "(unset)"), now.settings.get(key, "(unset)")
        if a != b:
            return (f"{where} was built with method_options.{bank.name}.{key} = {_short(a)}, but it is {_short(b)} "
                    "now: use the bank's settings or build a bank with these")
    if bank.out_size != now.out_size:
        return (f"{where} was built with out_size {bank.out_size}, but it is {now.out_size} now: use the bank's "
                "settings or build a bank with these")
    old = {r.what: r for r in bank.model_files}
    new = {r.what: r for r in now.model_files}
    for what in list(old) + [w for w in new if w not in old]:
        a, b = old.get(what), new.get(what)
        if a is None or b is None:
            return (f"{where}: the method's model files differ ({what!r} is "
                    f"{'new' if a is None else 'no longer used'}): build the bank again")
        if (a.kind, a.size, a.digest) != (b.kind, b.size, b.digest):
            return (f"{where} was built with model file {what!r} {_model_file_text(a)}, but it is "
                    f"{_model_file_text(b)} now: use the same file or build the bank again")
    for key in sorted(set(bank.described) | set(now.described)):
        a, b = bank.described.get(key, "(unset)"), now.described.get(key, "(unset)")
        if a != b:
            return (f"{where} was built with {key} {_short(a)}, but it is {_short(b)} now: use the bank's settings "
                    "or build a bank with these")
    if bank.fingerprint != now.fingerprint:
        return (f"{where} was built with other settings of method {bank.name!r} (fingerprint {bank.fingerprint}, "
                f"now {now.fingerprint}): use the config the bank was built with (its config.yaml) or build it again")
    return None

"""The good images a bank is built or calibrated from, as a command line gives them: image files,
folders (their images, not recursive) and glob patterns (``*``, ``?``, ``[...]``; ``**`` any
depth). Folder parts of a pattern are expanded with :func:`saa.datasets.glob_folders` (bounded,
never into a folder link that points back above itself), so a link loop cannot make it endless.
A path that does not exist, a folder or pattern without images, or more than :data:`MAX_INPUTS`
images is a one-line :class:`~saa.bank.records.BankError`. The same path twice is kept once;
the same content under two names is found by its hash when the bank is built."""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path, PurePath
from typing import Iterable

from ..datasets import glob_folders
from ..datasets.files import GLOB_CHARS, list_images
from .records import BankError

__all__ = ["expand_inputs", "MAX_INPUTS"]

#: at most this many images in one command
MAX_INPUTS = 100_000


def _pattern(text: str) -> list[Path]:
    parts = PurePath(text).parts
    first = next(i for i, p in enumerate(parts) if GLOB_CHARS & set(p))
    anchor = Path(*parts[:first]) if first else Path(".")
    folder_parts, name = parts[first:-1], parts[-1]
    if name == "**":
        folder_parts, name = parts[first:], "*"
    folders = glob_folders(anchor, str(PurePath(*folder_parts)), what="pattern") if folder_parts else [anchor]
    out = []
    for folder in folders:
        out += [p for p in list_images(folder) if fnmatch.fnmatch(p.name, name)]
        if len(out) > MAX_INPUTS:
            raise BankError(f"{text}: matches more than {MAX_INPUTS} images; give a narrower pattern")
    return sorted(out)


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Image paths from command-line words (files as given, folders and patterns expanded)."""
    out: list[Path] = []
    seen: set[str] = set()
    for item in items:
        text = os.fspath(item)
        path = Path(os.path.expanduser(text))
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise BankError(f"{path}: folder has no image file (sub-folders are not searched: give 'DIR/**/*.png')")
        elif path.exists():
            found = [path]
        elif GLOB_CHARS & set(text):
            found = _pattern(os.path.expanduser(text))
            if not found:
                raise BankError(f"{text}: no image file matches this pattern")
        else:
            raise BankError(f"{path}: no such file or folder")
        for p in found:
            key = os.path.normpath(os.path.abspath(p))
            if key not in seen:
                seen.add(key)
                out.append(p)
        if len(out) > MAX_INPUTS:
            raise BankError(f"more than {MAX_INPUTS} images given; build the bank from fewer")
    return out

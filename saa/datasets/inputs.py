"""Image files named on a command line (``saa predict``, ``saa demo``, ``saa bank build`` /
``calibrate``): files, folders and glob patterns expanded by ONE bounded, link-safe rule
(:func:`expand_images`).

* a file is kept as given (a missing plain file too: its read error names it later);
* a folder gives its image files (:data:`IMAGE_SUFFIXES`), sorted by name, not recursive;
* a pattern with ``*``, ``?`` or ``[`` gives the image files it matches, sorted; ``**`` recurses,
  visiting each REAL folder once (a folder link back to itself or an ancestor cannot make it
  expand forever; hidden folders are skipped as glob's ``**`` does);
* each real file is kept once, by its device and inode (a file reached by two paths or through a
  link is one image, so it can never be its own reference); the dropped paths are listed;
* every expansion stops at :data:`MAX_MATCHES` files / :data:`MAX_FOLDERS` folders with a one-line
  :class:`~saa.errors.SaaError`; a folder or pattern without an image is one line too;
* file names that are not UTF-8 are kept, shown with ``\\xNN`` escapes (:func:`display_name`).
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from ..errors import SaaError

__all__ = ["IMAGE_SUFFIXES", "MAX_MATCHES", "MAX_FOLDERS", "Expansion", "expand_images", "display_name"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: the most image files one call may expand to (files, folders and patterns together)
MAX_MATCHES = 100_000
#: the most folders the ``**`` of one call may visit
MAX_FOLDERS = 100_000
_MAGIC = re.compile(r"[*?\[]")


def display_name(path) -> str:
    """``path`` as text that can always be printed and written as UTF-8: bytes that are not UTF-8
    (surrogate escapes on Linux) as ``\\xNN``, control characters escaped too."""
    text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _is_utf8(path: str) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _identity(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing or unreadable: the read error names it later
    return (st.st_dev, st.st_ino)


def _is_image(path: str) -> bool:
    if os.path.splitext(path)[1].lower() not in IMAGE_SUFFIXES:
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass
class Expansion:
    """What :func:`expand_images` found: ``paths`` (each real file once, in the order given),
    ``duplicates`` (``(path dropped, path kept)``: the same file reached again) and ``not_utf8``
    (paths whose name is not UTF-8, kept)."""

    paths: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    not_utf8: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line per kind of thing the user should know (nothing when all is plain)."""
        out = []
        if self.duplicates:
            eg = "; ".join(f"{display_name(a)} = {display_name(b)}" for a, b in self.duplicates[:3])
            more = f" and {len(self.duplicates) - 3} more" if len(self.duplicates) > 3 else ""
            out.append(f"{len(self.duplicates)} input(s) name a file given before (another path or a link to the "
                       f"same file), each scored once: {eg}{more}")
        if self.not_utf8:
            out.append(f"{len(self.not_utf8)} file name(s) are not UTF-8, kept: shown with \\xNN escapes, their "
                       f"outputs named with %NN (e.g. {display_name(self.not_utf8[0])})")
        return out


class _Budget:
    def __init__(self):
        self.files = 0
        self.folders = 0

    def file(self, what: str) -> None:
        self.files += 1
        if self.files > MAX_MATCHES:
            raise SaaError(f"{display_name(what)}: more than {MAX_MATCHES} image files in one call; narrow the "
                           "pattern (a whole dataset is for `saa run`)")

    def folder(self, what: str) -> None:
        self.folders += 1
        if self.folders > MAX_FOLDERS:
            raise SaaError(f"{display_name(what)}: '**' visited more than {MAX_FOLDERS} folders; narrow the pattern")


def _listdir(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder or "."))
    except OSError:
        return []


def _folders_below(top: str, budget: _Budget, pattern: str) -> Iterable[str]:
    """``top`` and every folder below it (links followed), each REAL folder once (a link back to an
    ancestor, or a second way to a folder, is not entered again); folders reached without a link
    come first, so a file is listed by its real path where it has one; hidden folders are skipped,
    as glob's ``**`` does."""
    seen: set = set()
    real, links = [top], []
    while real or links:
        folder = real.pop() if real else links.pop(0)
        ident = _identity(folder or ".")
        if ident is None or ident in seen:
            continue
        seen.add(ident)
        budget.folder(pattern)
        yield folder
        subs = [os.path.join(folder, n) for n in _listdir(folder) if not n.startswith(".")]
        subs = [s for s in subs if os.path.isdir(s)]
        real.extend(reversed([s for s in subs if not os.path.islink(s)]))
        links.extend(s for s in subs if os.path.islink(s))


def _glob(pattern: str, budget: _Budget) -> list[str]:
    """The image files ``pattern`` matches (``*``, ``?``, ``[...]`` within a name; ``**``: any
    folders, each real one once), sorted; names starting with ``.`` only for a part that starts
    with ``.``."""
    import fnmatch

    seps = "/" + (os.sep if os.sep != "/" else "") + (os.altsep if os.altsep and os.altsep != "/" else "")
    anchor = os.sep if pattern[:1] in seps else ""
    parts = [p for p in re.split("[" + re.escape(seps) + "]", pattern) if p]
    found: set[str] = set()

    def walk(base: str, i: int) -> None:
        if i == len(parts):
            if _is_image(base) and base not in found:
                found.add(base)
                budget.file(pattern)
            return
        part = parts[i]
        if part == "**":
            for folder in list(_folders_below(base, budget, pattern)):
                walk(folder, i + 1)
        elif _MAGIC.search(part):
            for name in _listdir(base):
                if name.startswith(".") and not part.startswith("."):
                    continue
                if fnmatch.fnmatchcase(name, part):
                    child = os.path.join(base, name)
                    if i + 1 == len(parts) or os.path.isdir(child):
                        walk(child, i + 1)
        else:
            child = os.path.join(base, part) if base else part
            if i + 1 == len(parts) or os.path.isdir(child):
                walk(child, i + 1)

    walk(anchor, 0)
    return sorted(found)


def expand_images(items: Sequence) -> Expansion:
    """Image files from the command line: a file as given; a folder: its image files (suffixes of
    :data:`IMAGE_SUFFIXES`), sorted by name, not recursive; a pattern with ``*``, ``?`` or ``[``:
    the image files it matches, sorted (``**`` recurses, each real folder once). A folder or pattern
    with no image, too many files, or a path that does not exist is a one-line :class:`SaaError`
    (a missing plain file is kept: its read error names it). Each real file is kept once."""
    budget = _Budget()
    exp = Expansion()
    ids: dict[tuple[int, int], str] = {}
    texts: set[str] = set()
    for item in items:
        text = os.fsdecode(item) if isinstance(item, bytes) else str(item)
        if os.path.isdir(text):
            found = [os.path.join(text, n) for n in _listdir(text) if _is_image(os.path.join(text, n))]
            for f in found:
                budget.file(text)
            if not found:
                raise SaaError(f"{display_name(text)}: folder has no image file ({', '.join(IMAGE_SUFFIXES)}; "
                               "sub-folders are not searched: pass 'DIR/**/*.png' for those)")
        elif os.path.lexists(text) or not _MAGIC.search(text):
            found = [text]  # a file (or a missing one: its read error names it)
            budget.file(text)
        else:
            found = _glob(text, budget)
            if not found:
                raise SaaError(f"{display_name(text)}: no image file matches this pattern")
        for f in found:
            if f in texts:
                continue  # the same text twice: said only when two different paths meet
            texts.add(f)
            ident = _identity(f)
            if ident is not None and ident in ids:
                exp.duplicates.append((f, ids[ident]))
                continue
            if ident is not None:
                ids[ident] = f
            exp.paths.append(f)
            if not _is_utf8(f):
                exp.not_utf8.append(f)
    return exp

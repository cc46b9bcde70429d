"""File helpers of the dataset layouts: listing images and folders, matching masks to images by
name, the identity of a file, and the bounded folder glob of the ``folder`` kind.

Nothing here knows a layout; the helpers raise :class:`~saa.errors.DatasetError` with one line.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
from pathlib import Path, PurePath
from typing import Any, Iterable, Optional, Sequence

from ..errors import DatasetError, ImageReadError
from ..image_io import IMAGE_EXTENSIONS, read_mask

log = logging.getLogger("saa.datasets")

#: A folder glob of a dataset option (``defect_dirs: "defects/*"``) may look into at most this many
#: folders; past it the pattern is refused with a message (a link loop or a pattern such as ``/**``).
MAX_GLOB_FOLDERS = 10_000

_NATURAL = re.compile(r"(\d+)")
GLOB_CHARS = frozenset("*?[")


def natural_key(text: str) -> tuple:
    """Sort key putting "img2" before "img10"; ties are broken by the plain string."""
    parts = _NATURAL.split(text)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts) + ((2, 0, text),)


def is_hidden(path: Path) -> bool:
    # dotfiles, including macOS "._name.png" resource forks that carry an image extension
    return path.name.startswith(".")


def short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalise_extensions(exts: Optional[Iterable[str]]) -> tuple[str, ...]:
    if exts is None:
        return tuple(IMAGE_EXTENSIONS)
    if isinstance(exts, str):
        exts = [exts]
    out = []
    for e in exts:
        e = str(e).strip().lower()
        if not e:
            continue
        out.append(e if e.startswith(".") else "." + e)
    if not out:
        raise DatasetError("option 'extensions' is empty: give image extensions such as ['.png', '.jpg']")
    return tuple(out)


def list_images(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in ``folder`` (extension case-insensitive), naturally sorted."""
    if not folder.is_dir():
        return []
    files = [
        p for p in folder.iterdir()
        if not is_hidden(p) and p.suffix.lower() in extensions and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def list_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not is_hidden(p)), key=lambda p: p.name)


def order_categories(found: Iterable[str], known: Sequence[str]) -> list[str]:
    found = set(found)
    return [c for c in known if c in found] + sorted(found - set(known))


def mask_has_defect(path: Path, image: Path) -> bool:
    """Whether the mask file ``path`` (of ``image``) has a non-zero pixel."""
    try:
        return bool(read_mask(path).any())
    except ImageReadError as e:
        raise DatasetError(f"cannot read the mask of {image}: {e}") from e


# ----------------------------------------------------------------------------------------------
# File identity


def file_identity(path: Path) -> tuple:
    """What makes two paths the same file: device and inode (links and hard links included), or the
    real path where the file system has no inode numbers."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
    if st.st_ino:
        return ("inode", st.st_dev, st.st_ino)
    return ("path", os.path.normcase(os.path.realpath(path)))


def same_folder(a: Optional[Path], b: Optional[Path]) -> bool:
    """Whether two folder paths name one folder (by identity; False when either is absent)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# Masks matched to images by name


def _mask_order(p: Path) -> tuple:
    # a PNG first (".png" before ".PNG"), then by name: the first file of a stem wins
    return (p.suffix.lower() != ".png", p.suffix != ".png", p.name)


class MaskFiles:
    """The mask files of one folder, matched to images by file stem.

    :meth:`find` takes the file whose stem is exactly the one asked for, else the one whose stem
    differs only in letter case; two such files with different stems and no exact one are an
    ambiguity (a one-line error). Every stem found is remembered: :meth:`unmatched` lists the mask
    files no image asked for (a renamed image or mask, which would otherwise leave its image
    unlabelled without a word) and :meth:`check_ambiguous` refuses a stem that an image took
    exactly while a case variant of it stayed unused (``a.png`` and ``A.png`` for image ``a``).
    """

    def __init__(self, folder: Path, files: Iterable[Path]) -> None:
        self.folder = folder
        self._groups: dict[str, dict[str, list[Path]]] = {}
        for p in sorted(files, key=_mask_order):
            self._groups.setdefault(p.stem.casefold(), {}).setdefault(p.stem, []).append(p)
        self._used: dict[tuple[str, str], Path] = {}   # (folded stem, stem) -> an image that took it
        self._claimed: set[str] = set()                # folded stems of masks known but not read

    def find(self, stem: str, image: Path, extensions: Optional[Sequence[str]] = None) -> Optional[Path]:
        """The mask of ``image`` whose file stem is ``stem`` (letter case ignored when no file has
        it exactly); only files with one of ``extensions`` (lower case, with the dot) when given."""
        fold = stem.casefold()
        group = self._groups.get(fold)
        if not group:
            return None
        if extensions is not None:
            group = {s: [p for p in ps if p.suffix.lower() in extensions] for s, ps in group.items()}
            group = {s: ps for s, ps in group.items() if ps}
            if not group:
                return None
        if stem in group:
            chosen = stem
        elif len(group) == 1:
            chosen = next(iter(group))
        else:
            a, b = (group[s][0] for s in sorted(group)[:2])
            raise DatasetError(f"masks {a} and {b} both match image {image} when letter case is ignored; "
                               "rename or remove one")
        self._used.setdefault((fold, chosen), image)
        return group[chosen][0]

    def claim(self, stem: str) -> None:
        """Mark the masks of ``stem`` (any letter case) as belonging to an image whose mask is not
        read (a normal image): they are neither matched nor unmatched."""
        self._claimed.add(stem.casefold())

    def check_ambiguous(self) -> None:
        for (fold, stem), image in self._used.items():
            others = [s for s in self._groups[fold] if s != stem and (fold, s) not in self._used]
            if others and fold not in self._claimed:
                raise DatasetError(
                    f"masks {self._groups[fold][stem][0]} and {self._groups[fold][others[0]][0]} both match "
                    f"image {image} when letter case is ignored; rename or remove one"
                )

    def unmatched(self) -> list[Path]:
        """Mask files that no image took (checks ambiguity first)."""
        self.check_ambiguous()
        out = []
        for fold, group in self._groups.items():
            if fold in self._claimed:
                continue
            for stem, files in group.items():
                if (fold, stem) not in self._used:
                    out += files
        return sorted(out, key=lambda p: natural_key(str(p)))


def unmatched_summary(paths: Sequence[Path], category: str, few: int = 3) -> str:
    """The warning a run shows for masks that match no image: the count and a few files."""
    shown = ", ".join(str(p) for p in paths[:few])
    more = f" and {len(paths) - few} more" if len(paths) > few else ""
    return (f"category {category!r}: {len(paths)} mask file(s) match no image, so they label nothing "
            f"(a renamed image or mask?): {shown}{more}; `saa prepare check` lists them")


# ----------------------------------------------------------------------------------------------
# A bounded folder glob


def _is_link_back(entry_real: str, parent_real: str) -> bool:
    """Whether a folder link whose target is ``entry_real`` points at its own folder or one above."""
    return parent_real == entry_real or parent_real.startswith(entry_real.rstrip(os.sep) + os.sep)


class _BoundedGlob:
    """One run of :func:`glob_folders`: the folders it has looked into and the links it left out."""

    def __init__(self, anchor: Path, pattern: str, what: str, limit: int) -> None:
        self.anchor, self.pattern, self.what, self.limit = anchor, pattern, what, limit
        self.visited = 0
        self.skipped: list[str] = []

    def too_many(self) -> DatasetError:
        """The one-line refusal of a pattern that looks into more than ``limit`` folders."""
        return DatasetError(f"{self.what} {self.pattern!r} under {self.anchor} looks into more than "
                            f"{self.limit} folders; give a narrower pattern")

    def scan(self, folder: Path) -> list[tuple[str, bool, bool]]:
        """(name, is a folder, is a link) of the entries of ``folder``; counts it as looked into."""
        self.visited += 1
        if self.visited > self.limit:
            raise self.too_many()
        try:
            with os.scandir(folder) as it:
                out = []
                for e in it:
                    try:
                        out.append((e.name, e.is_dir(), e.is_symlink()))
                    except OSError:
                        continue
                return out
        except OSError:
            return []

    def child(self, path: Path, real: str, name: str, link: bool) -> Optional[tuple[Path, str]]:
        """The entry ``name`` of ``path`` with its real path, or None for a link back up (noted)."""
        p = path / name
        if not link:
            return p, os.path.join(real, name)
        target = os.path.realpath(p)
        if _is_link_back(target, real):
            self.skipped.append(f"{p} -> {target}")
            return None
        return p, target

    def descend(self, path: Path, real: str, seen: set[str]) -> Iterable[tuple[Path, str]]:
        """``**``: the folder itself and every folder below it, each real folder once; as in
        Path.glob, ``**`` does not enter folder links (so a link loop cannot make it endless)."""
        stack = [(path, real)]
        while stack:
            p, r = stack.pop()
            if r in seen:
                continue
            seen.add(r)
            yield p, r
            for name, is_dir, link in sorted(self.scan(p), reverse=True):
                if is_dir and not link:
                    stack.append((p / name, os.path.join(r, name)))

    def all_below(self, current: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
        """The folders a ``**`` part matches below every current folder."""
        nxt: list[tuple[Path, str]] = []
        seen: set[str] = set()
        for p, r in current:
            nxt += list(self.descend(p, r, seen))
        return nxt

    def wildcard(self, current: list[tuple[Path, str]], part: str) -> list[tuple[Path, str]]:
        """The sub-folders whose name matches the wildcard ``part``, links back up left out."""
        nxt: list[tuple[Path, str]] = []
        for p, r in current:
            for name, is_dir, link in sorted(self.scan(p)):
                if is_dir and fnmatch.fnmatch(name, part):
                    c = self.child(p, r, name, link)
                    if c is not None:
                        nxt.append(c)
        return nxt

    @staticmethod
    def literal(current: list[tuple[Path, str]], part: str) -> list[tuple[Path, str]]:
        """The sub-folder named exactly ``part`` of every current folder that has one."""
        nxt: list[tuple[Path, str]] = []
        for p, _ in current:
            q = p / part
            if q.is_dir():
                nxt.append((q, os.path.realpath(q)))
        return nxt

    def step(self, current: list[tuple[Path, str]], part: str) -> list[tuple[Path, str]]:
        """The folders matching one more part of the pattern; refused past ``limit`` of them."""
        if part == "**":
            nxt = self.all_below(current)
        elif GLOB_CHARS & set(part):
            nxt = self.wildcard(current, part)
        else:
            nxt = self.literal(current, part)
        if len(nxt) > self.limit:
            raise self.too_many()
        return nxt

    def warn_skipped(self) -> None:
        """One warning naming (a few of) the folder links left out."""
        if self.skipped:
            shown = ", ".join(self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else "")
            log.warning("%s %r: left out %d folder link(s) pointing back at a folder above them: %s",
                        self.what, self.pattern, len(self.skipped), shown)

    def run(self) -> list[Path]:
        """The matching folders, sorted, hidden ones left out."""
        current: list[tuple[Path, str]] = [(self.anchor, os.path.realpath(self.anchor))]
        for part in PurePath(self.pattern).parts:
            current = self.step(current, part)
        self.warn_skipped()
        return sorted({p for p, _ in current if not is_hidden(p)})


def glob_folders(anchor: Path, pattern: str, *, what: str = "pattern", limit: Optional[int] = None) -> list[Path]:
    """The folders matching ``pattern`` (relative to ``anchor``; ``*``, ``?``, ``[...]`` and ``**``
    as in :meth:`pathlib.Path.glob`), sorted, hidden ones left out.

    As ``Path.glob`` (Python 3.11), ``**`` does not enter folder links; unlike it, a wildcard never
    matches a folder link that points back at the folder holding it or one above (left out with a
    warning: it would list an ancestor as a defect folder), and the pattern may look into at most
    ``limit`` (default :data:`MAX_GLOB_FOLDERS`) folders before it is refused in one line.
    """
    limit = MAX_GLOB_FOLDERS if limit is None else limit
    return _BoundedGlob(anchor, pattern, what, limit).run()

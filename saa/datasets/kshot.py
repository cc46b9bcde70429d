"""K-shot reference selection: which good training images are the ``k`` references of few-shot run
``run``, read from a seed list in the format the SAA+ authors ship for MVTec AD
(``datasets/seeds_mvtec/<category>/selected_samples_per_run.txt``) and the VAND 2023 few-shot
track uses::

    0-1: 053
    0-5: 013 048 053 142 161
    1-1: 081
    ...

one line per run and ``k``: ``"{run}-{k}: id id ..."``, each ``id`` the file stem of an image of the
category's good training images (:meth:`saa.datasets.AnomalyDataset.train_samples`). Nothing is
drawn at random: :func:`select_k_shot` returns exactly the listed images, in the list's order, or a
one-line :class:`~saa.errors.DatasetError` (a malformed line, a run / k the file does not list, an
id no training image has, an id two training images share).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import DatasetError
from .base import Sample

__all__ = ["SEED_FILE_NAME", "SeedLists", "KShotSelection", "read_seed_lists", "seed_file_for", "select_k_shot"]

#: the file name of a category's seed list
SEED_FILE_NAME = "selected_samples_per_run.txt"

_LINE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*:(.*)$")


@dataclass(frozen=True)
class SeedLists:
    """The parsed seed lists of one category: ``(run, k) -> ids`` and the file they come from."""

    path: Path
    lists: dict[tuple[int, int], tuple[str, ...]]
    lines: dict[tuple[int, int], int]

    def ids(self, k: int, run: int) -> tuple[str, ...]:
        key = (int(run), int(k))
        if key not in self.lists:
            have = ", ".join(f"{r}-{kk}" for r, kk in sorted(self.lists)) or "none"
            raise DatasetError(f"{self.path}: no seed list for run {run} with k = {k} (the file lists run-k: {have})")
        return self.lists[key]


@dataclass(frozen=True)
class KShotSelection:
    """The ``k`` reference images of one few-shot run, and where the choice comes from."""

    k: int
    run: int
    seed_file: Path
    ids: tuple[str, ...]
    samples: tuple[Sample, ...]


def read_seed_lists(path: Union[str, os.PathLike]) -> SeedLists:
    """Parse a ``selected_samples_per_run.txt`` file (one-line errors naming the file and line)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{p}: seed list not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{p}: is a folder, expected a seed list file ({SEED_FILE_NAME})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{p}: not a text file (UTF-8); expected lines like '0-5: 013 048 053 142 161'") from None
    except OSError as e:
        raise DatasetError(f"{p}: cannot read the seed list: {e.strerror or e}") from None
    lists: dict[tuple[int, int], tuple[str, ...]] = {}
    lines: dict[tuple[int, int], int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise DatasetError(f"{p}: line {n} is not '<run>-<k>: id id ...': {line.strip()[:80]!r}")
        run, k, ids = int(m.group(1)), int(m.group(2)), tuple(m.group(3).split())
        if k < 1:
            raise DatasetError(f"{p}: line {n}: k must be at least 1, got {k}")
        if (run, k) in lists:
            raise DatasetError(f"{p}: line {n} lists run {run} with k = {k} again (first on line {lines[(run, k)]})")
        if len(ids) != k:
            raise DatasetError(f"{p}: line {n} ({run}-{k}) names {len(ids)} image(s), not {k}")
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise DatasetError(f"{p}: line {n} ({run}-{k}) names image {dup[0]!r} twice")
        lists[(run, k)], lines[(run, k)] = ids, n
    if not lists:
        raise DatasetError(f"{p}: the seed list is empty (expected lines like '0-5: 013 048 053 142 161')")
    return SeedLists(p, lists, lines)


def seed_file_for(seeds: Union[str, os.PathLike], category: str) -> Path:
    """The seed list of ``category`` in ``seeds``: the file itself, or in a folder
    ``<seeds>/<category>/selected_samples_per_run.txt`` (the authors' ``seeds_mvtec/`` tree), else
    ``<seeds>/selected_samples_per_run.txt``."""
    p = Path(os.path.expanduser(os.fspath(seeds)))
    if p.is_file():
        return p
    if p.is_dir():
        tried = [p / category / SEED_FILE_NAME, p / SEED_FILE_NAME]
        for t in tried:
            if t.is_file():
                return t
        raise DatasetError(f"{p}: no seed list of category {category!r} in this folder (looked for "
                           f"{tried[0]} and {tried[1]})")
    raise DatasetError(f"{p}: seed list file or folder not found")


def select_k_shot(train: Sequence[Sample], seeds: Union[str, os.PathLike, SeedLists], k: int, run: int,
                  category: Optional[str] = None, where: Optional[Union[str, os.PathLike]] = None) -> KShotSelection:
    """Exactly the training images the seed list names for ``(k, run)``, in the list's order.

    ``train``: the category's good training images (``dataset.train_samples(category)``);
    ``seeds``: a seed list file, a folder of them (:func:`seed_file_for`; needs ``category``) or
    parsed lists; ``where``: the training folder, for messages."""
    if int(k) < 1:
        raise DatasetError(f"--k-shot must be at least 1, got {k}")
    if int(run) < 0:
        raise DatasetError(f"the seed run must be 0 or more, got {run}")
    if not isinstance(seeds, SeedLists):
        path = Path(os.fspath(seeds))
        if path.is_dir():
            if category is None:
                raise DatasetError(f"{path}: a folder of seed lists needs the category")
            path = seed_file_for(path, category)
        seeds = read_seed_lists(path)
    ids = seeds.ids(k, run)
    by_stem: dict[str, list[Sample]] = {}
    for s in train:
        by_stem.setdefault(s.image_path.stem, []).append(s)
    folder = where if where is not None else (train[0].image_path.parent if train else "the training folder")
    line = seeds.lines[(int(run), int(k))]
    chosen = []
    for i in ids:
        found = by_stem.get(i, [])
        if not found:
            some = ", ".join(sorted(by_stem)[:3]) or "none"
            raise DatasetError(f"{seeds.path}: line {line} ({run}-{k}) names image {i!r}, but {folder} has no image "
                               f"with that file stem ({len(train)} image(s) there, e.g. {some})")
        if len(found) > 1:
            raise DatasetError(f"{seeds.path}: line {line} ({run}-{k}) names image {i!r}, and {folder} has "
                               f"{len(found)} files with that stem: {found[0].image_path.name}, "
                               f"{found[1].image_path.name}; keep one")
        chosen.append(found[0])
    return KShotSelection(int(k), int(run), seeds.path, tuple(ids), tuple(chosen))

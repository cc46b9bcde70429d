"""Reference images taken from a dataset: all good training images of a category, or exactly the
``k`` a few-shot seed list names (:func:`saa.datasets.select_k_shot`), with the
:class:`~saa.bank.records.KShotRecord` a bank and a run record. Used by ``saa bank build
--from-dataset`` and by ``saa run --k-shot``.

Where the seed lists are looked for: ``seeds`` when given (a ``selected_samples_per_run.txt`` file
or a folder of ``<category>/selected_samples_per_run.txt``, e.g. the SAA+ authors'
``datasets/seeds_mvtec/``); otherwise a dataset that ships its own (kind ``vand_kshot``:
``Train/<cat>/selected_samples_per_run.txt`` or its ``seeds`` option); any other dataset needs
``seeds`` (a one-line error says so).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .identity import file_sha256
from .records import BankError, KShotRecord

__all__ = ["DatasetReferences", "dataset_references", "seed_lists_of"]


@dataclass(frozen=True)
class DatasetReferences:
    """The reference images of one category taken from a dataset: their paths, the k-shot record
    (None: every good training image) and how they were chosen, in words."""

    paths: tuple[Path, ...]
    kshot: Optional[KShotRecord]
    source: str


def seed_lists_of(dataset, category: str, seeds: Optional[Union[str, os.PathLike]]) -> Path:
    """The seed list file of ``category``: in ``seeds`` (file or folder), else the dataset's own
    (``vand_kshot``); a one-line :class:`BankError` when there is none to look in."""
    from ..datasets import seed_file_for
    from ..datasets.vand_kshot import VandKShotDataset

    if seeds is not None:
        p = Path(os.path.expanduser(os.fspath(seeds)))
        return seed_file_for(p, category) if p.is_dir() else p
    if isinstance(dataset, VandKShotDataset):
        return dataset.seed_file(category)
    raise BankError(f"--k-shot needs --seeds FILE|DIR for dataset kind {dataset.name!r} (the seed lists, e.g. the SAA+ "
                    "repository's datasets/seeds_mvtec/; only kind vand_kshot ships its own)")


def dataset_references(dataset, kind: str, root: Union[str, os.PathLike], category: str, k: Optional[int] = None,
                       run: int = 0, seeds: Optional[Union[str, os.PathLike]] = None) -> DatasetReferences:
    """The good training images of ``category`` (``k`` None), or exactly the ``k`` that seed run
    ``run`` of the category's seed list names. One-line errors (:class:`~saa.errors.DatasetError`
    / :class:`BankError`) for a dataset without training images, a missing seed list, run or id."""
    from ..datasets import select_k_shot

    train = dataset.train_samples(category)
    if k is None:
        return DatasetReferences(tuple(s.image_path for s in train), None,
                                 f"--from-dataset {kind} {root} (all {len(train)} good training images)")
    seed_file = seed_lists_of(dataset, category, seeds)
    sel = select_k_shot(train, seed_file, k, run, category, where=train[0].image_path.parent if train else None)
    record = KShotRecord(k=sel.k, run=sel.run, seed_file=str(Path(sel.seed_file).resolve()),
                         seed_file_sha256=file_sha256(sel.seed_file)[0], ids=list(sel.ids), dataset_kind=str(kind),
                         dataset_root=str(Path(root).resolve()))
    return DatasetReferences(tuple(s.image_path for s in sel.samples), record,
                             f"--from-dataset {kind} {root} --k-shot {sel.k} --seed-run {sel.run} "
                             f"(seed list {sel.seed_file})")

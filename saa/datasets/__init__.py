"""Test sets as plain classes over folders, looked up by name in a registry.

Each dataset kind (SPEC §4) is a subclass of :class:`AnomalyDataset` registered with
:func:`register_dataset`; :func:`build_dataset` makes one from a kind name, a root folder and
kind-specific options (the ``dataset.options`` of a config)::

    ds = build_dataset("mvtec", "datasets/mvtec_anomaly_detection")
    for cat in ds.categories():
        for s in ds.samples(cat):
            image = read_rgb(s.image_path)
            gt = ds.load_mask(s, image.shape[:2])
        refs = ds.train_samples(cat)      # good training images, where the layout has them

Everything a user can get wrong (a wrong root, a missing category, a defect image without its mask,
one image file reached twice, two masks for one image) raises :class:`~saa.errors.DatasetError`
with the path concerned; mask files that match no image are warned about and listed by
:meth:`AnomalyDataset.unmatched_masks`.

:func:`prepare_visa` converts the raw VisA release into the ``1cls`` tree that ``visa_public`` reads,
and :func:`validate_dataset` summarises a dataset for ``saa prepare check``.

The package, one job per module: ``base`` (Sample, the base class, the registry), ``files`` (file
listing, mask matching, file identity, the bounded folder glob), one module per layout family
(``mvtec``: MVTec-AD and prepared VisA; ``visa_challenge``; ``vand_kshot``: the VAND few-shot
layout; ``ksdd2``; ``mtd``; ``folder``), ``kshot`` (k-shot references from seed lists), ``visa_prepare``
and ``check``. Importing the package registers every kind.
"""
from __future__ import annotations

from .base import DATASETS, NORMAL, AnomalyDataset, Sample, build_dataset, empty_mask_warning, register_dataset
from .check import MAX_WARNING_LINES, validate_dataset
from .files import MAX_GLOB_FOLDERS, glob_folders
from .folder import FolderDataset
from .ksdd2 import KSDD2Dataset
from .mtd import MTDDataset
from .mvtec import MVTEC_CATEGORIES, VISA_CATEGORIES, MVTecDataset, VisaPublicDataset
from .visa_challenge import VisaChallengeDataset
from .vand_kshot import VandKShotDataset
from .kshot import KShotSelection, SeedLists, read_seed_lists, seed_file_for, select_k_shot
from .visa_prepare import prepare_visa

__all__ = [
    "Sample",
    "AnomalyDataset",
    "DATASETS",
    "register_dataset",
    "build_dataset",
    "prepare_visa",
    "validate_dataset",
    "MVTEC_CATEGORIES",
    "VISA_CATEGORIES",
    "NORMAL",
    "MAX_WARNING_LINES",
    "MAX_GLOB_FOLDERS",
    "empty_mask_warning",
    "glob_folders",
    "MVTecDataset",
    "VisaPublicDataset",
    "VisaChallengeDataset",
    "VandKShotDataset",
    "KShotSelection",
    "SeedLists",
    "read_seed_lists",
    "seed_file_for",
    "select_k_shot",
    "KSDD2Dataset",
    "MTDDataset",
    "FolderDataset",
]

"""What every dataset layout shares: the :class:`Sample` record, the :class:`AnomalyDataset` base
class and the registry of kinds (:func:`register_dataset`, :func:`build_dataset`).

The base class owns the checks every layout gets for free: a category that is absent or empty,
two images with one id, the same image file reached twice (a link, a hard link, two spellings of
one path), and the warning on mask files that match no image.
"""
from __future__ import annotations

import abc
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np

from ..errors import DatasetError, ImageReadError
from ..image_io import read_mask
from .files import file_identity, natural_key, order_categories, unmatched_summary

log = logging.getLogger("saa.datasets")

NORMAL = "good"

#: unmatched-mask warnings already given in this process (the run and its report open the same
#: dataset: one warning is enough)
_WARNED_UNMATCHED: set[tuple] = set()


@dataclass(frozen=True)
class Sample:
    """One test image.

    ``label`` is 1 (anomalous), 0 (normal) or None (unknown, e.g. the challenge set).
    ``mask_path`` is None when the image has no ground-truth file (normal images, unlabelled sets);
    its mask is then all zero.
    """

    image_path: Path
    mask_path: Optional[Path]
    label: Optional[int]
    defect_type: str
    category: str

    @property
    def stem(self) -> str:
        return self.image_path.stem

    @property
    def key(self) -> str:
        """Unique id within a category, usable as a relative file path: ``<defect_type>/<stem>``."""
        return f"{self.defect_type}/{self.stem}"

    @property
    def is_anomalous(self) -> bool:
        return self.label == 1


def empty_mask_warning(sample: Sample) -> str:
    return (f"anomalous image {sample.image_path} has an empty mask (no non-zero pixel): "
            f"{sample.mask_path}; all its pixels count as normal in the pixel metrics")


# ----------------------------------------------------------------------------------------------
# Registry

DATASETS: dict[str, type["AnomalyDataset"]] = {}


def register_dataset(name: str) -> Callable[[type["AnomalyDataset"]], type["AnomalyDataset"]]:
    """Class decorator: make a dataset class available to :func:`build_dataset` as ``name``."""

    def deco(cls: type[AnomalyDataset]) -> type[AnomalyDataset]:
        if not (isinstance(cls, type) and issubclass(cls, AnomalyDataset)):
            raise TypeError(f"register_dataset({name!r}): {cls!r} is not an AnomalyDataset subclass")
        if name in DATASETS and DATASETS[name] is not cls:
            raise ValueError(f"dataset kind {name!r} is already registered ({DATASETS[name].__name__})")
        cls.name = name
        DATASETS[name] = cls
        return cls

    return deco


def build_dataset(kind: str, root: str | os.PathLike, **options: Any) -> "AnomalyDataset":
    """The dataset of kind ``kind`` (a key of :data:`DATASETS`) under ``root``."""
    cls = DATASETS.get(kind)
    if cls is None:
        known = ", ".join(sorted(DATASETS))
        raise DatasetError(f"unknown dataset kind {kind!r}; known kinds: {known}")
    return cls(root, **options)


# ----------------------------------------------------------------------------------------------
# Base class


def _check_distinct(items: Sequence[Sample], category: str, what: str = "image") -> None:
    """Refuse one file reached twice (a cross-image method would score it against itself)."""
    seen: dict[tuple, Path] = {}
    for s in items:
        ident = file_identity(s.image_path)
        other = seen.get(ident)
        if other is not None:
            raise DatasetError(
                f"the same {what} file is reached twice in category {category!r}: {other} and {s.image_path} "
                "(a link, a hard link or two spellings of one folder); remove one or change the folder options"
            )
        seen[ident] = s.image_path


class AnomalyDataset(abc.ABC):
    """A folder of test images grouped by category.

    Subclasses set ``known_categories`` (SPEC order), ``option_defaults`` (the options they accept)
    and implement :meth:`_find_categories`, :meth:`_collect` and :meth:`expected_layout`. A layout
    with good training images apart from the test images sets ``has_train_images`` and implements
    :meth:`_collect_train`. ``_collect`` records the mask files that match no image in
    ``self._unmatched[category]``.
    """

    name: ClassVar[str] = ""
    known_categories: ClassVar[tuple[str, ...]] = ()
    option_defaults: ClassVar[dict[str, Any]] = {}
    #: whether the layout has good training images apart from its test images (:meth:`train_samples`)
    has_train_images: ClassVar[bool] = False

    def __init__(self, root: str | os.PathLike, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            accepted = ", ".join(sorted(self.option_defaults)) or "none"
            raise DatasetError(
                f"dataset kind {self.name!r}: unknown option(s) {', '.join(unknown)}; accepted: {accepted}"
            )
        self.options: dict[str, Any] = {**self.option_defaults, **options}
        self.root = Path(os.path.expanduser(os.fspath(root)))
        self._cache: dict[str, list[Sample]] = {}
        self._train_cache: dict[str, list[Sample]] = {}
        self._unmatched: dict[str, list[Path]] = {}
        #: log a warning when a category has mask files that match no image (``saa prepare check``
        #: lists them itself and turns this off)
        self.warn_unmatched_masks = True
        self._configure()
        if not self.root.exists():
            raise self._error("dataset root folder does not exist", self.root)
        if not self.root.is_dir():
            raise self._error("dataset root is not a folder", self.root)

    # -- hooks -------------------------------------------------------------------------------
    def _configure(self) -> None:
        """Validate ``self.options`` (called before the root is checked)."""

    @abc.abstractmethod
    def _find_categories(self) -> list[str]:
        """The category folders present under the root."""

    @abc.abstractmethod
    def _collect(self, category: str) -> list[Sample]:
        """The samples of one category (sorted by the caller)."""

    def _collect_train(self, category: str) -> list[Sample]:
        """The good training images of one category (sorted by the caller); only called when
        ``has_train_images`` (a layout that says it has them overrides this)."""
        raise DatasetError(f"dataset kind {type(self).__name__} says it has training images but does not list them "
                       "(_collect_train is not implemented)")

    def _no_train_reason(self) -> str:
        """Why the layout has no training images (the end of the error of :meth:`train_samples`)."""
        return "every image of this layout is a test image"

    def label_notes(self, category: str) -> list[str]:
        """Report lines on how the labels of ``category`` were found (``saa prepare check``), if it
        is not plain from the layout."""
        return []

    def _category_hint(self, category: str) -> str:
        """Extra text for the 'category missing' error."""
        return ""

    def _root_hint(self) -> str:
        """Extra text when no category is found (e.g. the root is one level off)."""
        return ""

    @abc.abstractmethod
    def expected_layout(self) -> str:
        """A short text tree of the folder layout this kind reads (shown in errors)."""

    # -- public API ------------------------------------------------------------------------------
    @property
    def has_masks(self) -> bool:
        """Whether anomalous samples come with ground-truth masks (pixel metrics make sense)."""
        return True

    def categories(self) -> list[str]:
        """The categories present under the root, SPEC order first, then the others sorted."""
        found = self._find_categories()
        if not found:
            hint = self._root_hint()
            raise self._error(
                f"no {self.name} category found in the dataset root" + (f" ({hint})" if hint else ""),
                self.root,
            )
        return order_categories(found, self.known_categories)

    def _require_category(self, category: str) -> None:
        present = self.categories()
        if category not in present:
            hint = self._category_hint(category)
            raise self._error(
                f"category {category!r} not found" + (f" ({hint})" if hint else "")
                + f" (categories present: {', '.join(present)}) in the dataset root",
                self.root,
            )

    def samples(self, category: str) -> list[Sample]:
        """The test samples of ``category``, sorted by (defect type, natural file-name order).

        One image file reached twice (a link, a hard link, two spellings of one folder) is an
        error naming both paths; mask files that match no image are logged as a warning (once per
        category and process) and listed by :meth:`unmatched_masks`.
        """
        if category not in self._cache:
            self._require_category(category)
            self._unmatched.pop(category, None)
            items = self._collect(category)
            if not items:
                raise self._error(f"category {category!r} has no test images", self._category_path(category))
            items.sort(key=lambda s: (s.defect_type, natural_key(s.image_path.name)))
            _check_distinct(items, category)
            seen: dict[str, Sample] = {}
            for s in items:
                other = seen.get(s.key)
                if other is not None:
                    raise self._error(
                        f"two images of category {category!r} have the same id {s.key!r} "
                        f"(same file-name stem): {other.image_path} and {s.image_path}; rename one",
                        s.image_path.parent,
                    )
                seen[s.key] = s
            self._cache[category] = items
            unmatched = self._unmatched.get(category, [])
            said = (self.name, category, tuple(map(str, unmatched)))
            if unmatched and self.warn_unmatched_masks and said not in _WARNED_UNMATCHED:
                _WARNED_UNMATCHED.add(said)
                log.warning("%s", unmatched_summary(unmatched, category))
        return list(self._cache[category])

    def unmatched_masks(self, category: str) -> list[Path]:
        """The mask files of ``category`` that match no test image (a renamed image or mask): they
        label nothing. Empty for layouts without masks."""
        self.samples(category)
        return list(self._unmatched.get(category, []))

    def train_samples(self, category: str) -> list[Sample]:
        """The good TRAINING images of ``category`` (label 0, defect type ``good``, no mask),
        sorted by natural file-name order: the images a few-shot method may take as references of
        good parts. They are never test images: a training file that is also a test image of the
        category (a link, a hard link) is an error.

        Per layout: ``mvtec`` and ``visa_public`` read ``<root>/<category>/train/good/``;
        ``ksdd2`` with ``split: test`` reads the images of ``<root>/train/`` whose ground truth is
        all zero; ``vand_kshot`` reads ``<root>/Train/<category>/Images/``. The other layouts have none (``has_train_images`` is False) and raise
        :class:`~saa.errors.DatasetError` saying so, as do a missing or empty training folder.
        """
        if not self.has_train_images:
            raise DatasetError(f"dataset kind {self.name!r} has no training images of good parts: "
                               f"{self._no_train_reason()}")
        if category not in self._train_cache:
            self._require_category(category)
            items = self._collect_train(category)
            if not items:
                raise DatasetError(f"category {category!r} has no good training images: "
                                   f"{self._train_path(category)} has no image")
            items.sort(key=lambda s: natural_key(s.image_path.name))
            _check_distinct(items, category, "training image")
            test = {file_identity(s.image_path): s.image_path for s in self.samples(category)}
            for s in items:
                other = test.get(file_identity(s.image_path))
                if other is not None:
                    raise DatasetError(f"training image {s.image_path} of category {category!r} is the same file "
                                       f"as test image {other}; a reference must never be a test image")
            self._train_cache[category] = items
        return list(self._train_cache[category])

    def load_mask(self, sample: Sample, shape: Sequence[int]) -> np.ndarray:
        """The ground truth of ``sample`` as a bool (H, W) array; all False when it has no mask file."""
        h, w = int(shape[0]), int(shape[1])
        if sample.mask_path is None:
            return np.zeros((h, w), dtype=bool)
        try:
            mask = read_mask(sample.mask_path)
        except ImageReadError as e:
            raise DatasetError(f"cannot read the mask of {sample.image_path}: {e}") from e
        if mask.shape != (h, w):
            raise DatasetError(
                f"mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from image size {w}x{h}: "
                f"mask {sample.mask_path}, image {sample.image_path}"
            )
        if sample.label == 1 and not mask.any():
            log.warning("%s", empty_mask_warning(sample))
        return mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"

    # -- helpers ----------------------------------------------------------------------------------
    def _category_path(self, category: str) -> Path:
        return self.root / category

    def _train_path(self, category: str) -> Path:
        """The folder of the good training images of ``category`` (for messages)."""
        return self._category_path(category)

    def _error(self, message: str, path: Path | str) -> DatasetError:
        return DatasetError(f"{message}: {path}\n\nexpected layout ({self.name}):\n{self.expected_layout()}")

    def _missing_mask(self, image: Path, expected: Path | str) -> DatasetError:
        return self._error(f"anomalous image {image} has no mask file; expected it at", expected)

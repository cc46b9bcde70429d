"""Test sets as plain classes over folders, looked up by name in a registry.

Each dataset kind (SPEC §4) is a subclass of :class:`AnomalyDataset` registered with
:func:`register_dataset`; :func:`build_dataset` makes one from a kind name, a root folder and
kind-specific options (the ``dataset.options`` of a config)::

    ds = build_dataset("mvtec", "datasets/mvtec_anomaly_detection")
    for cat in ds.categories():
        for s in ds.samples(cat):
            image = read_rgb(s.image_path)
            gt = ds.load_mask(s, image.shape[:2])

Everything a user can get wrong (a wrong root, a missing category, a defect image without its mask)
raises :class:`~saa.errors.DatasetError` with the path concerned and the layout the kind expects.

:func:`prepare_visa` converts the raw VisA release into the ``1cls`` tree that ``visa_public`` reads,
and :func:`validate_dataset` summarises a dataset for ``saa prepare --check``.
"""
from __future__ import annotations

import abc
import csv
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Optional, Sequence

import cv2
import numpy as np

from .errors import DatasetError, ImageReadError
from .image_io import IMAGE_EXTENSIONS, _decode_quiet, atomic_write_bytes, read_header, read_mask

log = logging.getLogger(__name__)

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
]

MVTEC_CATEGORIES = (
    "carpet", "grid", "leather", "tile", "wood", "bottle", "cable", "capsule", "hazelnut",
    "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper",
)
VISA_CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
    "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
)

NORMAL = "good"


# ----------------------------------------------------------------------------------------------
# Samples


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


# ----------------------------------------------------------------------------------------------
# Small file helpers

_NATURAL = re.compile(r"(\d+)")


def _natural_key(text: str) -> tuple:
    """Sort key putting "img2" before "img10"; ties are broken by the plain string."""
    parts = _NATURAL.split(text)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts) + ((2, 0, text),)


def _is_hidden(path: Path) -> bool:
    # dotfiles, including macOS "._name.png" resource forks that carry an image extension
    return path.name.startswith(".")


def _normalise_extensions(exts: Optional[Iterable[str]]) -> tuple[str, ...]:
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


def _list_images(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in ``folder`` (extension case-insensitive), naturally sorted."""
    if not folder.is_dir():
        return []
    files = [
        p for p in folder.iterdir()
        if not _is_hidden(p) and p.suffix.lower() in extensions and p.is_file()
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _list_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p)), key=lambda p: p.name)


def _find_file(folder: Path, name: str) -> Optional[Path]:
    """``folder/name`` if it exists, else a file of that name differing only in case, else None."""
    exact = folder / name
    if exact.is_file():
        return exact
    if not folder.is_dir():
        return None
    low = name.lower()
    matches = sorted(p for p in folder.iterdir() if p.name.lower() == low and p.is_file())
    return matches[0] if matches else None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _order_categories(found: Iterable[str], known: Sequence[str]) -> list[str]:
    found = set(found)
    return [c for c in known if c in found] + sorted(found - set(known))


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


class AnomalyDataset(abc.ABC):
    """A folder of test images grouped by category.

    Subclasses set ``known_categories`` (SPEC order), ``option_defaults`` (the options they accept)
    and implement :meth:`_find_categories`, :meth:`_collect` and :meth:`expected_layout`.
    """

    name: ClassVar[str] = ""
    known_categories: ClassVar[tuple[str, ...]] = ()
    option_defaults: ClassVar[dict[str, Any]] = {}

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
        return _order_categories(found, self.known_categories)

    def samples(self, category: str) -> list[Sample]:
        """The test samples of ``category``, sorted by (defect type, natural file-name order)."""
        if category not in self._cache:
            present = self.categories()
            if category not in present:
                hint = self._category_hint(category)
                raise self._error(
                    f"category {category!r} not found" + (f" ({hint})" if hint else "")
                    + f" (categories present: {', '.join(present)}) in the dataset root",
                    self.root,
                )
            items = self._collect(category)
            if not items:
                raise self._error(f"category {category!r} has no test images", self._category_path(category))
            items.sort(key=lambda s: (s.defect_type, _natural_key(s.image_path.name)))
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
        return list(self._cache[category])

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

    def _error(self, message: str, path: Path | str) -> DatasetError:
        return DatasetError(f"{message}: {path}\n\nexpected layout ({self.name}):\n{self.expected_layout()}")

    def _missing_mask(self, image: Path, expected: Path | str) -> DatasetError:
        return self._error(f"anomalous image {image} has no mask file; expected it at", expected)


# ----------------------------------------------------------------------------------------------
# MVTec-AD and prepared VisA: <root>/<cat>/test/<type>/*, masks <root>/<cat>/ground_truth/<type>/


class _TestFolderDataset(AnomalyDataset):
    mask_suffix: ClassVar[str] = ""

    def _find_categories(self) -> list[str]:
        return [d.name for d in _list_dirs(self.root) if (d / "test").is_dir()]

    def _category_hint(self, category: str) -> str:
        d = self.root / category
        if d.is_dir():
            return f"{d} exists but has no test/ folder"
        return ""

    def _root_hint(self) -> str:
        if (self.root / "test").is_dir():
            return ("the root itself has a test/ folder: it looks like one category folder; "
                    "set the root to its parent folder")
        return ""

    def _category_path(self, category: str) -> Path:
        return self.root / category / "test"

    def _collect(self, category: str) -> list[Sample]:
        test = self.root / category / "test"
        gt_root = self.root / category / "ground_truth"
        out: list[Sample] = []
        for type_dir in _list_dirs(test):
            defect_type = type_dir.name
            normal = defect_type == NORMAL
            for img in _list_images(type_dir):
                mask = None
                if not normal:
                    name = f"{img.stem}{self.mask_suffix}.png"
                    mask = _find_file(gt_root / defect_type, name)
                    if mask is None:
                        raise self._missing_mask(img, gt_root / defect_type / name)
                out.append(Sample(img, mask, 0 if normal else 1, defect_type, category))
        return out


@register_dataset("mvtec")
class MVTecDataset(_TestFolderDataset):
    known_categories = MVTEC_CATEGORIES
    mask_suffix = "_mask"

    def expected_layout(self) -> str:
        return (
            "<root>/<category>/test/good/000.png              normal images (no mask)\n"
            "<root>/<category>/test/<defect>/000.png          anomalous images\n"
            "<root>/<category>/ground_truth/<defect>/000_mask.png\n"
            f"categories: {' '.join(MVTEC_CATEGORIES)}"
        )


@register_dataset("visa_public")
class VisaPublicDataset(_TestFolderDataset):
    known_categories = VISA_CATEGORIES
    mask_suffix = ""

    def _root_hint(self) -> str:
        if (self.root / "1cls").is_dir():
            return f"set the root to the prepared folder {self.root / '1cls'}"
        if (self.root / "split_csv").is_dir() or any(
            (d / "Data" / "Images").is_dir() for d in _list_dirs(self.root)
        ):
            return ("this looks like the raw VisA release; convert it first with "
                    "`saa prepare visa` (prepare_visa) and use the 1cls output folder as root")
        return super()._root_hint()

    def expected_layout(self) -> str:
        return (
            "<root>/<category>/test/good/0000.JPG             normal images\n"
            "<root>/<category>/test/bad/000.JPG               anomalous images\n"
            "<root>/<category>/ground_truth/bad/000.png       masks (0/255)\n"
            "root = the 1cls folder written by prepare_visa from the raw release + split_csv/1cls.csv\n"
            f"categories: {' '.join(VISA_CATEGORIES)}"
        )


# ----------------------------------------------------------------------------------------------
# VisA challenge (VAND 2023): <root>/Test/<cat>/Images/*, no labels


@register_dataset("visa_challenge")
class VisaChallengeDataset(AnomalyDataset):
    known_categories = VISA_CATEGORIES
    defect_type: ClassVar[str] = "unknown"

    @property
    def has_masks(self) -> bool:
        return False

    def _find_categories(self) -> list[str]:
        return [d.name for d in _list_dirs(self.root / "Test") if (d / "Images").is_dir()]

    def _root_hint(self) -> str:
        if not (self.root / "Test").is_dir():
            if any((d / "Images").is_dir() for d in _list_dirs(self.root)):
                return "the root looks like the Test folder itself; set the root to its parent"
            return f"there is no Test/ folder at {self.root / 'Test'}"
        return ""

    def _category_path(self, category: str) -> Path:
        return self.root / "Test" / category / "Images"

    def _collect(self, category: str) -> list[Sample]:
        return [
            Sample(img, None, None, self.defect_type, category)
            for img in _list_images(self._category_path(category))
        ]

    def expected_layout(self) -> str:
        return (
            "<root>/Test/<category>/Images/<name>.JPG         unlabelled test images\n"
            f"categories: {' '.join(VISA_CATEGORIES)}"
        )


# ----------------------------------------------------------------------------------------------
# KSDD2: <root>/{train,test}/<id>.png + <id>_GT.png


def _mask_has_defect(path: Path, image: Path) -> bool:
    try:
        return bool(read_mask(path).any())
    except ImageReadError as e:
        raise DatasetError(f"cannot read the mask of {image}: {e}") from e


@register_dataset("ksdd2")
class KSDD2Dataset(AnomalyDataset):
    known_categories = ("ksdd2",)
    option_defaults = {"split": "test"}
    GT_SUFFIX: ClassVar[str] = "_GT"

    def _configure(self) -> None:
        split = self.options["split"]
        if split not in ("test", "train"):
            raise DatasetError(
                f"ksdd2 option 'split' must be 'test' (the official test folder) or 'train' "
                f"(the folder the authors' code evaluated), got {split!r}"
            )
        self.split: str = split

    def _find_categories(self) -> list[str]:
        return ["ksdd2"] if (self.root / self.split).is_dir() else []

    def _root_hint(self) -> str:
        return f"there is no {self.split}/ folder at {self.root / self.split}"

    def _category_path(self, category: str) -> Path:
        return self.root / self.split

    def _collect(self, category: str) -> list[Sample]:
        folder = self.root / self.split
        suffix = self.GT_SUFFIX.lower()
        out = []
        for img in _list_images(folder):
            if img.stem.lower().endswith(suffix):
                continue
            name = f"{img.stem}{self.GT_SUFFIX}.png"
            gt = _find_file(folder, name)
            if gt is None:
                raise self._error(f"image {img} has no ground-truth file; expected it at", folder / name)
            bad = _mask_has_defect(gt, img)
            out.append(Sample(img, gt if bad else None, int(bad), "bad" if bad else NORMAL, category))
        return out

    def expected_layout(self) -> str:
        return (
            "<root>/train/<id>.png + <root>/train/<id>_GT.png\n"
            "<root>/test/<id>.png  + <root>/test/<id>_GT.png\n"
            "label = 1 when <id>_GT.png has a non-zero pixel; option split = test (default) | train"
        )


# ----------------------------------------------------------------------------------------------
# MTD: <root>/MT_*/Imgs/<stem>.jpg + <stem>.png


@register_dataset("mtd")
class MTDDataset(AnomalyDataset):
    """Magnetic-tile defects. ``MT_Free`` is normal; its png masks are not read.

    Option ``label_from``: ``"mask"`` (default; as the authors' loader: an image of a defect folder
    whose mask is all zero counts as normal — 4 MT_Uneven images) or ``"folder"`` (every image of a
    defect folder is anomalous).
    """

    known_categories = ("mtd",)
    option_defaults = {"label_from": "mask"}
    FREE: ClassVar[str] = "MT_Free"

    def _configure(self) -> None:
        if self.options["label_from"] not in ("mask", "folder"):
            raise DatasetError(
                f"mtd option 'label_from' must be 'mask' or 'folder', got {self.options['label_from']!r}"
            )

    def _class_dirs(self) -> list[Path]:
        return [d for d in _list_dirs(self.root) if d.name.startswith("MT_") and (d / "Imgs").is_dir()]

    def _find_categories(self) -> list[str]:
        return ["mtd"] if self._class_dirs() else []

    def _root_hint(self) -> str:
        if self.root.name.startswith("MT_") or self.root.name == "Imgs":
            return "the root looks like one class folder; set the root to the folder holding the MT_* folders"
        return ""

    def _collect(self, category: str) -> list[Sample]:
        from_mask = self.options["label_from"] == "mask"
        out = []
        for d in self._class_dirs():
            imgs = d / "Imgs"
            normal = d.name == self.FREE
            # the .png files beside the .jpg images are the masks, never images
            for img in _list_images(imgs):
                if img.suffix.lower() == ".png":
                    continue
                if normal:
                    out.append(Sample(img, None, 0, d.name, category))
                    continue
                mask = _find_file(imgs, f"{img.stem}.png")
                if mask is None:
                    raise self._missing_mask(img, imgs / f"{img.stem}.png")
                label = int(_mask_has_defect(mask, img)) if from_mask else 1
                out.append(Sample(img, mask, label, d.name, category))
        return out

    def expected_layout(self) -> str:
        return (
            "<root>/MT_Free/Imgs/<stem>.jpg                   normal images (masks not needed)\n"
            "<root>/MT_<Defect>/Imgs/<stem>.jpg + <stem>.png  anomalous images + masks\n"
            "defect folders: MT_Blowhole MT_Break MT_Crack MT_Fray MT_Uneven"
        )


# ----------------------------------------------------------------------------------------------
# A user's own folders


_GLOB_CHARS = set("*?[")


@register_dataset("folder")
class FolderDataset(AnomalyDataset):
    """Your own parts: folders of normal, defective or mixed images, optional masks.

    Options (paths relative to the root unless absolute):
      normal_dir   folder of normal images (defect type ``good``; their masks are not read)
      defect_dirs  a folder, a glob ("defects/*") or a list of them: every image is defective;
                   defect type = folder name
      image_dirs   the same forms, for folders where normal and defective images are mixed: each
                   image is labelled by its mask (defective when the mask has a non-zero pixel, good
                   without a mask file or with an all-zero one); defect type = folder name; needs
                   ``mask_dir``
      mask_dir     masks matched by image stem, either in ``<mask_dir>/<defect_type>/`` or directly
                   in ``<mask_dir>/``; file ``<stem><mask_suffix>.<image extension>``; it may be an
                   image folder itself (masks beside the images, told apart by ``mask_suffix``)
      mask_suffix  e.g. "_mask" (default "")
      extensions   image extensions to list (default: all supported)
      category     category name (default: the root folder's name)
    """

    option_defaults = {
        "normal_dir": None,
        "defect_dirs": None,
        "image_dirs": None,
        "mask_dir": None,
        "mask_suffix": "",
        "extensions": None,
        "category": None,
    }

    def _configure(self) -> None:
        o = self.options
        for key in ("normal_dir", "mask_dir"):
            if o[key] is not None and not isinstance(o[key], (str, os.PathLike)):
                raise DatasetError(f"dataset kind 'folder': option {key} must be a folder path, "
                                   f"got {_short(o[key])}")
        for key in ("defect_dirs", "image_dirs"):
            self._dir_specs(key)  # type check
        if o["normal_dir"] is None and not o["defect_dirs"] and not o["image_dirs"]:
            raise DatasetError(
                "dataset kind 'folder' needs option 'normal_dir', 'defect_dirs' and/or 'image_dirs' "
                f"(folders relative to the root {self.root})\n\nexpected layout (folder):\n{self.expected_layout()}"
            )
        if o["image_dirs"] and o["mask_dir"] is None:
            raise DatasetError(
                "dataset kind 'folder': option image_dirs labels each image by its mask, so it needs option "
                "mask_dir (the folder of the masks; it may be the image folder itself, with a mask_suffix)"
            )
        self.extensions = _normalise_extensions(o["extensions"])
        self.category: str = str(o["category"]) if o["category"] else self.root.resolve().name
        self.mask_suffix: str = str(o["mask_suffix"] or "")
        #: per category, how the images of image_dirs were labelled (for validate_dataset)
        self._mask_label_counts: dict[str, dict[str, int]] = {}

    @property
    def has_masks(self) -> bool:
        return self.options["mask_dir"] is not None

    def _resolve(self, p: str | os.PathLike) -> Path:
        p = Path(os.path.expanduser(os.fspath(p)))
        return p if p.is_absolute() else self.root / p

    def _dir_specs(self, key: str) -> list[str]:
        spec = self.options[key]
        if not spec:
            return []
        items = [spec] if isinstance(spec, (str, os.PathLike)) else spec
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, os.PathLike)) for i in items):
            raise DatasetError(f"dataset kind 'folder': option {key} must be a folder, a glob or a list of them, "
                               f"got {_short(spec)}")
        return [os.fspath(i) for i in items]

    def _dirs_of(self, key: str, what: str) -> list[tuple[Path, bool]]:
        """The folders of option ``key``: (folder, found by a glob)."""
        out: list[tuple[Path, bool]] = []
        for text in self._dir_specs(key):
            if _GLOB_CHARS & set(text):
                base = Path(os.path.expanduser(text))
                if base.is_absolute():
                    anchor, pattern = Path(base.anchor), str(base.relative_to(base.anchor))
                else:
                    anchor, pattern = self.root, text
                found = sorted(p for p in anchor.glob(pattern) if p.is_dir() and not _is_hidden(p))
                if not found:
                    raise self._error(f"{key} pattern {text!r} matches no folder under", anchor)
                out += [(p, True) for p in found]
            else:
                d = self._resolve(text)
                if not d.is_dir():
                    raise self._error(f"{what} folder (option {key}) does not exist", d)
                out.append((d, False))
        return out

    def _image_folders(self) -> list[tuple[Path, bool]]:
        """Folders of defective images (False) and of mixed images labelled by masks (True), in the
        order given; a glob never picks the mask or normal folder (named folders are kept: masks
        may lie beside the images)."""
        o = self.options
        mask_dir = self._resolve(o["mask_dir"]) if o["mask_dir"] is not None else None
        normal = self._resolve(o["normal_dir"]) if o["normal_dir"] is not None else None
        out: list[tuple[Path, bool]] = []
        seen: dict[Path, str] = {}
        for key, by_mask in (("defect_dirs", False), ("image_dirs", True)):
            for d, globbed in self._dirs_of(key, "defect" if key == "defect_dirs" else "image"):
                if globbed and (d == mask_dir or d == normal):
                    continue
                if d == normal:
                    raise self._error(f"folder is both normal_dir and in {key}", d)
                if d in seen:
                    if seen[d] != key:
                        raise self._error("folder is in both defect_dirs (all defective) and image_dirs "
                                          "(labelled by masks); list it in one of them", d)
                    continue
                if d == mask_dir and not self.mask_suffix:
                    raise self._error(f"the mask folder is also an image folder (option {key}): set option "
                                      "mask_suffix (e.g. '_mask') so masks and images can be told apart", d)
                seen[d] = key
                out.append((d, by_mask))
        return out

    def _defect_names(self, dirs: list[Path]) -> list[str]:
        names = [d.name for d in dirs]
        if len(set(names)) == len(names) and NORMAL not in names:
            return names
        out = []
        for d in dirs:
            try:
                rel = d.relative_to(self.root).as_posix()
            except ValueError:
                rel = d.as_posix().lstrip("/")
            if rel in ("", "."):  # the root itself (image_dirs: ".")
                rel = d.resolve().name or "root"
            out.append(re.sub(r"[^A-Za-z0-9._-]+", "_", rel))
        return out

    def _find_categories(self) -> list[str]:
        return [self.category]

    def _category_path(self, category: str) -> Path:
        return self.root

    def _find_mask(self, img: Path, defect_type: str, mask_dir: Path, index: dict) -> Optional[Path]:
        stem = img.stem + self.mask_suffix
        for folder in (mask_dir / defect_type, mask_dir):
            if folder not in index:
                by_stem: dict[str, Path] = {}
                # PNG first, then by name: the first file of a stem wins
                for m in sorted(_list_images(folder), key=lambda q: (q.suffix.lower() != ".png", q.name)):
                    by_stem.setdefault(m.stem, m)
                index[folder] = by_stem
            m = index[folder].get(stem)
            if m is not None and m.resolve() != img.resolve():
                return m
        return None

    def _mask_places(self, mask_dir: Path, defect_type: str, stem: str) -> str:
        return (f"{mask_dir / defect_type / (stem + self.mask_suffix)}.png "
                f"or {mask_dir / (stem + self.mask_suffix)}.png")

    def _collect(self, category: str) -> list[Sample]:
        o = self.options
        out: list[Sample] = []
        if o["normal_dir"] is not None:
            nd = self._resolve(o["normal_dir"])
            if not nd.is_dir():
                raise self._error("normal folder (option normal_dir) does not exist", nd)
            out += [Sample(img, None, 0, NORMAL, category) for img in _list_images(nd, self.extensions)]
        mask_dir = None
        if o["mask_dir"] is not None:
            mask_dir = self._resolve(o["mask_dir"])
            if not mask_dir.is_dir():
                raise self._error("mask folder (option mask_dir) does not exist", mask_dir)
        folders = self._image_folders()
        index: dict[Path, dict[str, Path]] = {}
        counts = {"images": 0, "defective": 0, "empty_mask": 0, "no_mask": 0}
        example = None
        for (d, by_mask), defect_type in zip(folders, self._defect_names([d for d, _ in folders])):
            for img in _list_images(d, self.extensions):
                if self.mask_suffix and img.stem.endswith(self.mask_suffix):
                    continue  # masks kept beside the images
                mask = None
                if mask_dir is not None:
                    mask = self._find_mask(img, defect_type, mask_dir, index)
                if not by_mask:
                    if mask_dir is not None and mask is None:
                        raise self._missing_mask(img, self._mask_places(mask_dir, defect_type, img.stem))
                    out.append(Sample(img, mask, 1, defect_type, category))
                    continue
                counts["images"] += 1
                example = example or (img, defect_type)
                if mask is None:
                    counts["no_mask"] += 1
                    label = 0
                else:
                    label = int(_mask_has_defect(mask, img))
                    counts["defective" if label else "empty_mask"] += 1
                out.append(Sample(img, mask, label, defect_type, category))
        if counts["images"] and counts["no_mask"] == counts["images"]:
            img, defect_type = example
            raise self._error(
                f"none of the {counts['images']} images of image_dirs has a mask, so none could be labelled "
                f"defective (e.g. {img}: looked for {self._mask_places(mask_dir, defect_type, img.stem)}); "
                "check options mask_dir and mask_suffix, or list folders of normal images as normal_dir, in",
                mask_dir,
            )
        self._mask_label_counts[category] = counts
        return out

    def label_notes(self, category: str) -> list[str]:
        self.samples(category)
        c = self._mask_label_counts.get(category)
        if not c or not c["images"]:
            return []
        return [f"{category}: {c['images']} images of image_dirs labelled by their masks: {c['defective']} defective "
                f"(a non-zero mask pixel), {c['empty_mask']} good with an all-zero mask, {c['no_mask']} good "
                "without a mask file"]

    def expected_layout(self) -> str:
        return (
            "<root>/<normal_dir>/*.png                        normal images (option normal_dir)\n"
            "<root>/<defect_dir>/*.png                        defective images (option defect_dirs: folder, list or glob)\n"
            "<root>/<image_dir>/*.png                         normal and defective mixed, labelled by their masks\n"
            "                                                 (option image_dirs: folder, list or glob; needs mask_dir)\n"
            "<root>/<mask_dir>/[<folder name>/]<stem><mask_suffix>.png   masks (option mask_dir; any non-zero pixel = defect)\n"
            "options: normal_dir, defect_dirs, image_dirs, mask_dir, mask_suffix, extensions, category"
        )


# ----------------------------------------------------------------------------------------------
# VisA preparation

_VISA_COLUMNS = ("object", "split", "label", "image", "mask")
_VISA_LAYOUT = (
    "<raw>/<category>/Data/Images/Normal/*.JPG\n"
    "<raw>/<category>/Data/Images/Anomaly/*.JPG\n"
    "<raw>/<category>/Data/Masks/Anomaly/*.png\n"
    "<raw>/split_csv/1cls.csv   columns: object,split,label,image,mask (paths relative to <raw>)"
)


def _visa_error(message: str, path: Path | str) -> DatasetError:
    return DatasetError(f"{message}: {path}\n\nexpected raw VisA layout:\n{_VISA_LAYOUT}")


def _read_split_csv(csv_path: Path) -> list[dict[str, str]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [(c or "").strip() for c in (reader.fieldnames or [])]
            missing = [c for c in _VISA_COLUMNS if c not in fields]
            if missing:
                raise _visa_error(
                    f"malformed split csv: missing column(s) {', '.join(missing)} "
                    f"(found: {', '.join(fields) or 'nothing'})",
                    csv_path,
                )
            rows = []
            for i, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
                if not any(row.values()):
                    continue
                row["_line"] = str(i)
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _visa_error(f"cannot read the split csv ({e})", csv_path) from e
    if not rows:
        raise _visa_error("the split csv has no rows", csv_path)
    return rows


def _copy_preserving(src: Path, dst: Path) -> bool:
    """Copy bytes and mtime; False (nothing written) when ``dst`` already has them."""
    st = src.stat()
    if dst.is_file():
        dt = dst.stat()
        if dt.st_size == st.st_size and int(dt.st_mtime) == int(st.st_mtime):
            return False
    atomic_write_bytes(dst, src.read_bytes())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return True


def _write_binary_mask(src: Path, dst: Path) -> bool:
    try:
        m = read_mask(src)
    except ImageReadError as e:
        raise _visa_error(f"cannot read a mask listed in the split csv ({e})", src) from e
    ok, buf = cv2.imencode(".png", m.astype(np.uint8) * 255)
    if not ok:
        raise OSError(f"{dst}: PNG encoding failed")
    data = buf.tobytes()
    if dst.is_file() and dst.read_bytes() == data:
        return False
    atomic_write_bytes(dst, data)
    return True


def prepare_visa(
    raw_root: str | os.PathLike,
    out_root: str | os.PathLike,
    split_csv: str | os.PathLike | None = None,
    categories: Optional[Iterable[str]] = None,
) -> dict[str, int]:
    """Build the VisA ``1cls`` tree (what ``visa_public`` reads) from the raw release.

    ``split_csv`` is the ``1cls.csv`` file or the folder holding it (default
    ``<raw_root>/split_csv/1cls.csv``). Images are copied byte for byte; masks are written as PNG
    with values 0/255. Files already up to date are left alone, so running it again is cheap and
    changes nothing. ``categories`` limits the work to some objects (e.g. a partial download).
    Every referenced file is checked before anything is written.

    Returns counts: categories, train_good, test_good, test_bad, masks, written, unchanged.
    """
    raw = Path(os.path.expanduser(os.fspath(raw_root)))
    out = Path(os.path.expanduser(os.fspath(out_root)))
    if not raw.is_dir():
        raise _visa_error("raw VisA folder does not exist", raw)
    if split_csv is None:
        csv_path = raw / "split_csv" / "1cls.csv"
    else:
        csv_path = Path(os.path.expanduser(os.fspath(split_csv)))
        if csv_path.is_dir():
            csv_path = csv_path / "1cls.csv"
    if not csv_path.is_file():
        raise _visa_error("split csv not found", csv_path)
    rows = _read_split_csv(csv_path)
    wanted = set(categories) if categories is not None else None

    # plan and check everything first
    plan: list[tuple[str, Path, Path]] = []  # (kind, src, dst)
    targets: dict[Path, Path] = {}
    counts = {"categories": 0, "train_good": 0, "test_good": 0, "test_bad": 0, "masks": 0,
              "written": 0, "unchanged": 0}
    cats: set[str] = set()
    for row in rows:
        where = f"{csv_path} line {row['_line']}"
        obj, split, label = row["object"], row["split"].lower(), row["label"].lower()
        if wanted is not None and obj not in wanted:
            continue
        if not obj or not row["image"]:
            raise _visa_error("split csv row without object or image", where)
        if (split, label) == ("train", "normal"):
            sub = "train/good"
        elif (split, label) == ("test", "normal"):
            sub = "test/good"
        elif (split, label) == ("test", "anomaly"):
            sub = "test/bad"
        else:
            raise _visa_error(
                f"unexpected split/label {row['split']!r}/{row['label']!r} (expected train/normal, "
                f"test/normal or test/anomaly)", where,
            )
        src = raw / row["image"]
        if not src.is_file():
            raise _visa_error(f"image listed in the split csv ({where}) not found", src)
        dst = out / obj / sub / src.name
        if dst in targets and targets[dst] != src:
            raise _visa_error(f"two csv rows write the same output file ({targets[dst]} and {src})", dst)
        targets[dst] = src
        plan.append(("image", src, dst))
        counts[sub.replace("/", "_")] += 1
        cats.add(obj)
        if sub == "test/bad":
            if not row["mask"]:
                raise _visa_error("anomalous image without a mask in the split csv", where)
            msrc = raw / row["mask"]
            if not msrc.is_file():
                raise _visa_error(f"mask listed in the split csv ({where}) not found", msrc)
            plan.append(("mask", msrc, out / obj / "ground_truth" / "bad" / f"{src.stem}.png"))
            counts["masks"] += 1
    if wanted is not None and not cats:
        raise _visa_error(f"none of the categories {sorted(wanted)} appears in the split csv", csv_path)
    counts["categories"] = len(cats)

    for kind, src, dst in plan:
        changed = _copy_preserving(src, dst) if kind == "image" else _write_binary_mask(src, dst)
        counts["written" if changed else "unchanged"] += 1
    return counts


def empty_mask_warning(sample: Sample) -> str:
    return (f"anomalous image {sample.image_path} has an empty mask (no non-zero pixel): "
            f"{sample.mask_path}; all its pixels count as normal in the pixel metrics")


# ----------------------------------------------------------------------------------------------
# Checking a dataset

#: At most this many warning lines of one kind in a check report (then a count of the others).
MAX_WARNING_LINES = 20


def _check_pair(s: Sample, decode_image: bool, problems: list[str], warnings: dict[str, list[str]]) -> None:
    """Headers (pixel limit, EXIF orientation), then the decoded image and mask of one sample."""
    files = [("image", s.image_path)] + ([("mask", s.mask_path)] if s.mask_path is not None else [])
    headers = {}
    for what, path in files:
        try:
            h = read_header(path)
        except ImageReadError as e:
            problems.append(f"unreadable {what}: {e}")
            return
        headers[what] = h
        if h.orientation not in (0, 1):
            warnings["orientation"].append(
                f"{path}: EXIF orientation {h.orientation} is ignored (saa reads images and masks as their "
                f"pixels are stored; a viewer shows this file turned: check that its "
                f"{'mask' if what == 'image' else 'image'} was drawn on the stored pixels)")
    size = (headers["image"].height, headers["image"].width)
    if decode_image:
        try:
            img = _decode_quiet(s.image_path, "color")
            size = img.shape[:2]
        except ImageReadError as e:
            problems.append(f"unreadable image: {e}")
            return
    if s.mask_path is None:
        return
    try:
        mask = read_mask(s.mask_path)
    except ImageReadError as e:
        problems.append(f"unreadable mask: {e}")
        return
    if mask.shape != tuple(size):
        problems.append(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {size[1]}x{size[0]}: "
                        f"mask {s.mask_path}, image {s.image_path}")
    elif s.label == 1 and not mask.any():
        warnings["empty mask"].append(empty_mask_warning(s))


def validate_dataset(
    kind: str,
    root: str | os.PathLike,
    categories: Optional[Iterable[str]] = None,
    check_sizes: bool = False,
    decode: bool = False,
    **options: Any,
) -> list[str]:
    """Human-readable report lines on a dataset (for ``saa prepare check``).

    Lists each category with its normal / anomalous / unlabelled image counts and mask count.
    With ``check_sizes`` every image that has a mask and its mask are decoded (as a run reads them)
    and their sizes compared; with ``decode`` every image is decoded too. Either way the headers are
    checked against the pixel limit, and ``warning:`` lines name anomalous images whose mask is empty
    and files with an EXIF orientation tag (ignored for images and masks alike).
    Raises DatasetError with every problem found (and the report so far) when something is wrong.
    """
    ds = build_dataset(kind, root, **options)
    present = ds.categories()
    cats = list(categories) if categories is not None else present
    lines = [f"dataset {kind} at {ds.root}: {len(present)} categories present ({', '.join(present)})"]
    if categories is None and ds.known_categories and len(ds.known_categories) > 1:
        absent = [c for c in ds.known_categories if c not in present]
        if absent:
            lines.append(f"note: {len(absent)} of the {len(ds.known_categories)} standard categories "
                         f"are absent: {', '.join(absent)}")
    problems: list[str] = []
    warnings: dict[str, list[str]] = {"empty mask": [], "orientation": []}
    totals = [0, 0, 0, 0, 0]
    for cat in cats:
        try:
            samples = ds.samples(cat)
        except DatasetError as e:
            problems.append(str(e).split("\n\n", 1)[0])
            continue
        normal = sum(s.label == 0 for s in samples)
        bad = sum(s.label == 1 for s in samples)
        unknown = sum(s.label is None for s in samples)
        masks = sum(s.mask_path is not None for s in samples)
        types = sorted({s.defect_type for s in samples})
        line = f"{cat}: {len(samples)} images ({normal} normal, {bad} anomalous"
        if unknown:
            line += f", {unknown} unlabelled"
        line += f"), {masks} masks; types: {', '.join(types)}"
        lines.append(line)
        lines += ds.label_notes(cat)
        for i, v in enumerate((len(samples), normal, bad, unknown, masks)):
            totals[i] += v
        if check_sizes or decode:
            for s in samples:
                if s.mask_path is None and not decode:
                    continue
                _check_pair(s, True, problems, warnings)
    lines.append(f"total: {totals[0]} images ({totals[1]} normal, {totals[2]} anomalous"
                 + (f", {totals[3]} unlabelled" if totals[3] else "") + f"), {totals[4]} masks")
    if decode:
        lines.append("decoded: every image and mask")
    elif check_sizes:
        lines.append("decoded: every image with a mask, and its mask (--decode: every image)")
    else:
        lines.append("note: the images were not decoded; add --decode to decode every image and mask "
                     "(corrupt files, sizes, empty masks) before a long run")
    for kind_, items in warnings.items():
        lines += [f"warning: {w}" for w in items[:MAX_WARNING_LINES]]
        if len(items) > MAX_WARNING_LINES:
            lines.append(f"warning: ... and {len(items) - MAX_WARNING_LINES} more ({kind_})")
    if problems:
        report = "\n".join(lines)
        raise DatasetError(
            f"dataset check failed ({len(problems)} problem(s)):\n- " + "\n- ".join(problems)
            + f"\n\nreport:\n{report}\n\nexpected layout ({ds.name}):\n{ds.expected_layout()}"
        )
    return lines

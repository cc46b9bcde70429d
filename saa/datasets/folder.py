"""A user's own folders (dataset kind ``folder``): normal, defective or mixed images, optional masks."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from ..errors import DatasetError
from .base import NORMAL, AnomalyDataset, Sample, register_dataset
from .files import (
    GLOB_CHARS,
    MaskFiles,
    file_identity,
    glob_folders,
    list_dirs,
    list_images,
    mask_has_defect,
    normalise_extensions,
    same_folder,
    short,
)


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
                   image folder itself (masks beside the images, told apart by ``mask_suffix``).
                   Letter case is ignored when no mask has the exact name; masks that match no
                   image are listed by ``saa prepare check`` and warned about by runs
      mask_suffix  e.g. "_mask" (default "")
      extensions   image extensions to list (default: all supported)
      category     category name (default: the root folder's name)

    Globs never follow a folder link back into a folder above it and look into at most
    :data:`~saa.datasets.files.MAX_GLOB_FOLDERS` folders.
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
                                   f"got {short(o[key])}")
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
        self.extensions = normalise_extensions(o["extensions"])
        self.category: str = str(o["category"]) if o["category"] else self.root.resolve().name
        self.mask_suffix: str = str(o["mask_suffix"] or "")
        #: per category, how the images of image_dirs were labelled (for validate_dataset)
        self._mask_label_counts: dict[str, dict[str, int]] = {}

    @property
    def has_masks(self) -> bool:
        return self.options["mask_dir"] is not None

    def _no_train_reason(self) -> str:
        return "the images of normal_dir are test images (give reference images of good parts directly)"

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
                               f"got {short(spec)}")
        return [os.fspath(i) for i in items]

    def _dirs_of(self, key: str, what: str) -> list[tuple[Path, bool]]:
        """The folders of option ``key``: (folder, found by a glob)."""
        out: list[tuple[Path, bool]] = []
        for text in self._dir_specs(key):
            if GLOB_CHARS & set(text):
                base = Path(os.path.expanduser(text))
                if base.is_absolute():
                    anchor, pattern = Path(base.anchor), str(base.relative_to(base.anchor))
                else:
                    anchor, pattern = self.root, text
                found = glob_folders(anchor, pattern, what=f"{key} pattern")
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
        may lie beside the images). A folder given twice with one spelling is listed once; two
        spellings of one folder reach the same images twice, which :meth:`samples` refuses."""
        o = self.options
        mask_dir = self._resolve(o["mask_dir"]) if o["mask_dir"] is not None else None
        normal = self._resolve(o["normal_dir"]) if o["normal_dir"] is not None else None
        out: list[tuple[Path, bool]] = []
        seen: dict[Path, str] = {}
        for key, by_mask in (("defect_dirs", False), ("image_dirs", True)):
            for d, globbed in self._dirs_of(key, "defect" if key == "defect_dirs" else "image"):
                if globbed and (same_folder(d, mask_dir) or same_folder(d, normal)):
                    continue
                if same_folder(d, normal):
                    raise self._error(f"folder is both normal_dir and in {key}", d)
                if d in seen:
                    if seen[d] != key:
                        raise self._error("folder is in both defect_dirs (all defective) and image_dirs "
                                          "(labelled by masks); list it in one of them", d)
                    continue
                if same_folder(d, mask_dir) and not self.mask_suffix:
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

    def _is_mask_name(self, path: Path) -> bool:
        """Whether a file beside the images is a mask (its stem ends with the suffix, any case)."""
        return bool(self.mask_suffix) and path.stem.casefold().endswith(self.mask_suffix.casefold())

    def _mask_places(self, mask_dir: Path, defect_type: str, stem: str) -> str:
        return (f"{mask_dir / defect_type / (stem + self.mask_suffix)}.png "
                f"or {mask_dir / (stem + self.mask_suffix)}.png")

    def _collect(self, category: str) -> list[Sample]:
        o = self.options
        out: list[Sample] = []
        normal_images: list[Path] = []
        image_folders: list[Path] = []
        if o["normal_dir"] is not None:
            nd = self._resolve(o["normal_dir"])
            if not nd.is_dir():
                raise self._error("normal folder (option normal_dir) does not exist", nd)
            normal_images = list_images(nd, self.extensions)
            out += [Sample(img, None, 0, NORMAL, category) for img in normal_images]
            image_folders.append(nd)
        mask_dir = None
        if o["mask_dir"] is not None:
            mask_dir = self._resolve(o["mask_dir"])
            if not mask_dir.is_dir():
                raise self._error("mask folder (option mask_dir) does not exist", mask_dir)
        folders = self._image_folders()
        masks = _MaskLookup(mask_dir, self.mask_suffix, image_folders + [d for d, _ in folders], self._is_mask_name)
        counts = {"images": 0, "defective": 0, "empty_mask": 0, "no_mask": 0}
        example = None
        for (d, by_mask), defect_type in zip(folders, self._defect_names([d for d, _ in folders])):
            for img in list_images(d, self.extensions):
                if self._is_mask_name(img):
                    continue  # masks kept beside the images
                mask = masks.find(img, defect_type)
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
                    label = int(mask_has_defect(mask, img))
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
        self._unmatched[category] = masks.unmatched(normal_images, [s.image_path for s in out])
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


class _MaskLookup:
    """The masks of a folder dataset: ``<mask_dir>/<defect type>/`` first, then ``<mask_dir>/``,
    each folder listed once; what no image took is :meth:`unmatched`."""

    def __init__(self, mask_dir: Optional[Path], suffix: str, image_folders: list[Path], is_mask_name) -> None:
        self.mask_dir = mask_dir
        self.suffix = suffix
        self.is_mask_name = is_mask_name
        self.image_folder_ids = {file_identity(d) for d in image_folders}
        self.index: dict[Path, MaskFiles] = {}

    def masks_in(self, folder: Path) -> MaskFiles:
        if folder not in self.index:
            files = list_images(folder)
            if self.suffix:
                files = [p for p in files if self.is_mask_name(p)]
            elif folder.is_dir() and file_identity(folder) in self.image_folder_ids:
                files = []  # an image folder holds no mask without a suffix
            self.index[folder] = MaskFiles(folder, files)
        return self.index[folder]

    def find(self, img: Path, defect_type: str) -> Optional[Path]:
        if self.mask_dir is None:
            return None
        stem = img.stem + self.suffix
        nested, flat = self.mask_dir / defect_type, self.mask_dir
        m = self.masks_in(nested).find(stem, img)
        if m is not None:
            self.masks_in(flat).claim(stem)  # a flat mask of the same name is shadowed, not lost
        else:
            m = self.masks_in(flat).find(stem, img)
        if m is not None and file_identity(m) == file_identity(img):
            return None
        return m

    def unmatched(self, normal_images: list[Path], images: list[Path]) -> list[Path]:
        """Mask files no image took, in ``mask_dir`` and each folder directly under it (masks of
        normal images are not read: neither matched nor unmatched; checks ambiguity first)."""
        if self.mask_dir is None:
            return []
        for img in normal_images:
            for folder in (self.mask_dir / NORMAL, self.mask_dir):
                self.masks_in(folder).claim(img.stem + self.suffix)
        for folder in [self.mask_dir] + list_dirs(self.mask_dir):
            self.masks_in(folder)
        image_ids = {file_identity(p) for p in images}
        out: dict[tuple, Path] = {}
        for mf in self.index.values():
            for p in mf.unmatched():
                ident = file_identity(p)
                if ident not in image_ids:
                    out.setdefault(ident, p)
        return sorted(out.values())

"""MVTec-AD and prepared VisA, one tree shape: ``<root>/<cat>/test/<type>/*`` with masks in
``<root>/<cat>/ground_truth/<type>/`` and good training images in ``<root>/<cat>/train/good/``."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from .base import NORMAL, AnomalyDataset, Sample, register_dataset
from .files import MaskFiles, list_dirs, list_images

MVTEC_CATEGORIES = (
    "carpet", "grid", "leather", "tile", "wood", "bottle", "cable", "capsule", "hazelnut",
    "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper",
)
VISA_CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
    "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
)


class _TestFolderDataset(AnomalyDataset):
    mask_suffix: ClassVar[str] = ""
    has_train_images = True

    def _find_categories(self) -> list[str]:
        return [d.name for d in list_dirs(self.root) if (d / "test").is_dir()]

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

    def _train_path(self, category: str) -> Path:
        return self.root / category / "train" / NORMAL

    def _collect(self, category: str) -> list[Sample]:
        test = self.root / category / "test"
        gt_root = self.root / category / "ground_truth"
        # every mask folder, also those of no test folder (a renamed defect type)
        masks = {d.name: MaskFiles(d, list_images(d)) for d in list_dirs(gt_root)}
        out: list[Sample] = []
        for type_dir in list_dirs(test):
            defect_type = type_dir.name
            normal = defect_type == NORMAL
            found = masks.get(defect_type)
            for img in list_images(type_dir):
                stem = f"{img.stem}{self.mask_suffix}"
                if normal:
                    if found is not None:
                        found.claim(stem)  # masks of good images are not read
                    out.append(Sample(img, None, 0, defect_type, category))
                    continue
                mask = found.find(stem, img, extensions=(".png",)) if found is not None else None
                if mask is None:
                    raise self._missing_mask(img, gt_root / defect_type / f"{stem}.png")
                out.append(Sample(img, mask, 1, defect_type, category))
        self._unmatched[category] = [p for m in masks.values() for p in m.unmatched()]
        return out

    def _collect_train(self, category: str) -> list[Sample]:
        return [Sample(img, None, 0, NORMAL, category) for img in list_images(self._train_path(category))]


@register_dataset("mvtec")
class MVTecDataset(_TestFolderDataset):
    known_categories = MVTEC_CATEGORIES
    mask_suffix = "_mask"

    def expected_layout(self) -> str:
        return (
            "<root>/<category>/test/good/000.png              normal images (no mask)\n"
            "<root>/<category>/test/<defect>/000.png          anomalous images\n"
            "<root>/<category>/ground_truth/<defect>/000_mask.png\n"
            "<root>/<category>/train/good/000.png             good training images (few-shot references only)\n"
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
            (d / "Data" / "Images").is_dir() for d in list_dirs(self.root)
        ):
            return ("this looks like the raw VisA release; convert it first with "
                    "`saa prepare visa` (prepare_visa) and use the 1cls output folder as root")
        return super()._root_hint()

    def expected_layout(self) -> str:
        return (
            "<root>/<category>/test/good/0000.JPG             normal images\n"
            "<root>/<category>/test/bad/000.JPG               anomalous images\n"
            "<root>/<category>/ground_truth/bad/000.png       masks (0/255)\n"
            "<root>/<category>/train/good/0000.JPG            good training images (few-shot references only)\n"
            "root = the 1cls folder written by prepare_visa from the raw release + split_csv/1cls.csv\n"
            f"categories: {' '.join(VISA_CATEGORIES)}"
        )

"""Magnetic-tile defects: ``<root>/MT_*/Imgs/<stem>.jpg`` + ``<stem>.png`` mask; ``MT_Free`` is
normal."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ..errors import DatasetError
from .base import AnomalyDataset, Sample, register_dataset
from .files import MaskFiles, list_dirs, list_images, mask_has_defect


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
        return [d for d in list_dirs(self.root) if d.name.startswith("MT_") and (d / "Imgs").is_dir()]

    def _find_categories(self) -> list[str]:
        return ["mtd"] if self._class_dirs() else []

    def _root_hint(self) -> str:
        if self.root.name.startswith("MT_") or self.root.name == "Imgs":
            return "the root looks like one class folder; set the root to the folder holding the MT_* folders"
        return ""

    def _no_train_reason(self) -> str:
        return "MTD has no train/test split (MT_Free images are test images)"

    def _collect(self, category: str) -> list[Sample]:
        from_mask = self.options["label_from"] == "mask"
        out = []
        unmatched: list[Path] = []
        for d in self._class_dirs():
            imgs = d / "Imgs"
            normal = d.name == self.FREE
            files = list_images(imgs)
            # the .png files beside the .jpg images are the masks, never images
            masks = MaskFiles(imgs, [p for p in files if p.suffix.lower() == ".png"])
            for img in files:
                if img.suffix.lower() == ".png":
                    continue
                if normal:
                    out.append(Sample(img, None, 0, d.name, category))
                    continue
                mask = masks.find(img.stem, img)
                if mask is None:
                    raise self._missing_mask(img, imgs / f"{img.stem}.png")
                label = int(mask_has_defect(mask, img)) if from_mask else 1
                out.append(Sample(img, mask, label, d.name, category))
            if not normal:  # MT_Free's masks are not read
                unmatched += masks.unmatched()
        self._unmatched[category] = unmatched
        return out

    def expected_layout(self) -> str:
        return (
            "<root>/MT_Free/Imgs/<stem>.jpg                   normal images (masks not needed)\n"
            "<root>/MT_<Defect>/Imgs/<stem>.jpg + <stem>.png  anomalous images + masks\n"
            "defect folders: MT_Blowhole MT_Break MT_Crack MT_Fray MT_Uneven"
        )

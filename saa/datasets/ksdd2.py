"""KolektorSDD2: ``<root>/{train,test}/<id>.png`` + ``<id>_GT.png``; an image is anomalous when its
ground truth has a non-zero pixel."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ..errors import DatasetError
from .base import NORMAL, AnomalyDataset, Sample, register_dataset
from .files import MaskFiles, list_images, mask_has_defect


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

    @property
    def has_train_images(self) -> bool:  # type: ignore[override]
        # the good images of train/, unless train/ is the evaluated folder
        return self.split == "test"

    def _no_train_reason(self) -> str:
        return ("with option split=train the train/ folder is the evaluated one (use the default split=test "
                "to take the good images of train/ as references)")

    def _find_categories(self) -> list[str]:
        return ["ksdd2"] if (self.root / self.split).is_dir() else []

    def _root_hint(self) -> str:
        return f"there is no {self.split}/ folder at {self.root / self.split}"

    def _category_path(self, category: str) -> Path:
        return self.root / self.split

    def _train_path(self, category: str) -> Path:
        return self.root / "train"

    def _pairs(self, folder: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
        """(image, ground truth) of every image of ``folder``, and the ground-truth files of no image."""
        suffix = self.GT_SUFFIX.lower()
        files = list_images(folder)
        gts = MaskFiles(folder, [p for p in files if p.stem.lower().endswith(suffix)])
        pairs = []
        for img in files:
            if img.stem.lower().endswith(suffix):
                continue
            stem = f"{img.stem}{self.GT_SUFFIX}"
            gt = gts.find(stem, img, extensions=(".png",))
            if gt is None:
                raise self._error(f"image {img} has no ground-truth file; expected it at", folder / f"{stem}.png")
            pairs.append((img, gt))
        return pairs, gts.unmatched()

    def _collect(self, category: str) -> list[Sample]:
        pairs, self._unmatched[category] = self._pairs(self.root / self.split)
        out = []
        for img, gt in pairs:
            bad = mask_has_defect(gt, img)
            out.append(Sample(img, gt if bad else None, int(bad), "bad" if bad else NORMAL, category))
        return out

    def _collect_train(self, category: str) -> list[Sample]:
        folder = self._train_path(category)
        if not folder.is_dir():
            raise DatasetError(f"KSDD2 has no train/ folder for the good training images: {folder}")
        pairs, _ = self._pairs(folder)
        return [Sample(img, None, 0, NORMAL, category) for img, gt in pairs if not mask_has_defect(gt, img)]

    def expected_layout(self) -> str:
        return (
            "<root>/train/<id>.png + <root>/train/<id>_GT.png\n"
            "<root>/test/<id>.png  + <root>/test/<id>_GT.png\n"
            "label = 1 when <id>_GT.png has a non-zero pixel; option split = test (default) | train"
        )

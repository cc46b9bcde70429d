"""The VisA challenge set (VAND 2023 workshop, zero-shot track): ``<root>/Test/<cat>/Images/*``,
no labels, no masks."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from .base import AnomalyDataset, Sample, register_dataset
from .files import list_dirs, list_images
from .mvtec import VISA_CATEGORIES


@register_dataset("visa_challenge")
class VisaChallengeDataset(AnomalyDataset):
    known_categories = VISA_CATEGORIES
    defect_type: ClassVar[str] = "unknown"

    @property
    def has_masks(self) -> bool:
        return False

    def _find_categories(self) -> list[str]:
        return [d.name for d in list_dirs(self.root / "Test") if (d / "Images").is_dir()]

    def _root_hint(self) -> str:
        if not (self.root / "Test").is_dir():
            if any((d / "Images").is_dir() for d in list_dirs(self.root)):
                return "the root looks like the Test folder itself; set the root to its parent"
            return f"there is no Test/ folder at {self.root / 'Test'}"
        return ""

    def _category_path(self, category: str) -> Path:
        return self.root / "Test" / category / "Images"

    def _no_train_reason(self) -> str:
        return "the zero-shot challenge set holds unlabelled test images only"

    def _collect(self, category: str) -> list[Sample]:
        return [
            Sample(img, None, None, self.defect_type, category)
            for img in list_images(self._category_path(category))
        ]

    def expected_layout(self) -> str:
        return (
            "<root>/Test/<category>/Images/<name>.JPG         unlabelled test images\n"
            f"categories: {' '.join(VISA_CATEGORIES)}"
        )

"""The VAND 2023 few-shot layout (``vand_kshot``): the unlabelled test images of the zero-shot
challenge set plus good reference images and the seed lists that say which of them each few-shot
run uses::

    <root>/Test/<cat>/Images/*                              unlabelled test images
    <root>/Train/<cat>/Images/*                             good reference images
    <root>/Train/<cat>/selected_samples_per_run.txt         "{run}-{k}: id id ..." (ids: file stems)

The seed lists may live elsewhere (option ``seeds``: a folder holding
``<cat>/selected_samples_per_run.txt``, relative to the root or absolute). Read them with
:func:`saa.datasets.kshot.select_k_shot` (:meth:`VandKShotDataset.k_shot` does it for a category).
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import NORMAL, Sample, register_dataset
from .files import list_dirs, list_images
from .kshot import SEED_FILE_NAME, KShotSelection, seed_file_for, select_k_shot
from .visa_challenge import VisaChallengeDataset


@register_dataset("vand_kshot")
class VandKShotDataset(VisaChallengeDataset):
    """Test images as ``visa_challenge``; good references in ``Train/<cat>/Images``."""

    has_train_images = True
    option_defaults = {"seeds": None}

    def _find_categories(self) -> list[str]:
        return [d.name for d in list_dirs(self.root / "Test") if (d / "Images").is_dir()]

    def _train_path(self, category: str) -> Path:
        return self.root / "Train" / category / "Images"

    def _collect_train(self, category: str) -> list[Sample]:
        return [Sample(img, None, 0, NORMAL, category) for img in list_images(self._train_path(category))]

    def seed_file(self, category: str) -> Path:
        """The seed list of ``category``: under the ``seeds`` option's folder when set, else
        ``<root>/Train/<cat>/selected_samples_per_run.txt``."""
        seeds = self.options.get("seeds")
        if seeds:
            p = Path(os.path.expanduser(str(seeds)))
            return seed_file_for(p if p.is_absolute() else self.root / p, category)
        return self.root / "Train" / category / SEED_FILE_NAME

    def k_shot(self, category: str, k: int, run: int) -> KShotSelection:
        """The ``k`` reference images of few-shot run ``run`` of ``category`` (exactly those listed)."""
        return select_k_shot(self.train_samples(category), self.seed_file(category), k, run, category,
                             where=self._train_path(category))

    def expected_layout(self) -> str:
        return (
            "<root>/Test/<category>/Images/<name>.JPG                    unlabelled test images\n"
            "<root>/Train/<category>/Images/<name>.JPG                   good reference images\n"
            f"<root>/Train/<category>/{SEED_FILE_NAME}   lines '<run>-<k>: <stem> <stem> ...'\n"
            "(option seeds: another folder holding <category>/" + SEED_FILE_NAME + ")"
        )

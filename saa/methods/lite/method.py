"""``lite`` (ours, not the authors' method): each image scored against reference images of its
category with EfficientNet-Lite0 features (:class:`~saa.methods.lite.features.LitePipeline`); no
Grounding DINO, no SAM, no regions. Works after a plain install, offline, on a CPU."""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

import cv2
import numpy as np

from ...config import SaaConfig
from ...prediction import Prediction
from ...saliency.bank import scores_against
from ..base import Method, ModelFile
from ..registry import register_method
from .settings import LiteSettings

__all__ = ["LiteMethod"]

log = logging.getLogger("saa.methods.lite")


@register_method
class LiteMethod(Method):
    """Lite mode as a method; its settings: ``method_options.lite`` (:class:`LiteSettings`), or
    keyword arguments that replace them."""

    name = "lite"
    panels = ("image", "ground_truth", "anomaly_map")
    Settings = LiteSettings

    def __init__(self, config: SaaConfig, **settings: Any):
        super().__init__(config, **settings)
        self._lite = None

    @property
    def lite(self):
        """The :class:`LitePipeline` of these settings on the config's device (built when first needed)."""
        if self._lite is None:
            from ...models.checkpoints import resolve_device
            from .features import LitePipeline

            self._lite = LitePipeline(self.settings, device=resolve_device(str(self.config.models.device)))
        return self._lite

    def load(self) -> "LiteMethod":
        _ = self.lite
        return self

    def model_files(self) -> list[ModelFile]:
        return [ModelFile(f"feature CNN weights, {self.settings.backbone}", self.settings.checkpoint)]

    @property
    def label(self) -> str:
        return "lite (ours: cross-image EfficientNet-Lite0 saliency, no Grounding DINO / SAM)"

    @property
    def needs_references(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        s = self.settings
        settings = {
            "features": f"{s.backbone} stages {list(s.stages)}, ~{s.size}^2 px input "
                        f"({'aspect kept' if s.keep_aspect else 'squashed'}), pooled {s.pool}x{s.pool}",
            "reference rule": (f"{s.aggregate} (fraction {s.fraction}), k {s.k}, at most "
                               f"{s.max_others or 'all'} others ({s.subset})"),
            "smoothing": f"sigma {s.smooth} px",
        }
        return {"name": self.name, "label": self.label, "preset": None, "settings": settings,
                "summary": "lite (our addition, not the authors' method): each image scored against the other "
                           "images of its category; pixel scores only, no regions"}

    def reference_features(self, rgb: np.ndarray):
        return self.lite.reference_features(rgb).cpu()

    def reference_features_batch(self, images):
        return [f.cpu() for f in self.lite.reference_features_batch(images)]

    def bank_settings(self) -> dict[str, Any]:
        return self.lite.bank_settings()

    def predict(self, rgb: np.ndarray, category: str, *, bank=None, index: Optional[int] = None) -> Prediction:
        t0 = time.perf_counter()
        notes: list[str] = []
        cross, got = scores_against(bank, index, lambda: self.reference_features(rgb))
        if cross is None:
            note = (f"lite compares each image with the other images of its category ({got}); "
                    "used single-image (nearest) saliency instead")
            log.warning(note)
            notes.append(note)
        full, branch = self.lite.map_of(rgb, cross)
        size = int(self.config.out_size)
        return Prediction(
            category=category,
            anomaly_map=cv2.resize(full, (size, size)).astype(np.float32),
            anomaly_map_full=full.astype(np.float32),
            saliency=full.astype(np.float32),
            saliency_branch=branch,
            timings={"lite": time.perf_counter() - t0},
            notes=notes,
            method=self.name,
            method_label=self.label,
            has_regions=False,
            image_score=float(full.max()),
        )

"""``lite`` (ours, not the authors' method): each image scored against the other images of its
category with EfficientNet-Lite0 features (:class:`saa.lite.LitePipeline`); no Grounding DINO,
no SAM, no regions. Works after a plain install, offline, on a CPU."""
from __future__ import annotations

import inspect
import logging
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from ..config import SaaConfig
from ..prediction import Prediction
from ..saliency.bank import scores_against
from . import register_method
from .base import Method, hash_of, reference_set_id

__all__ = ["LiteMethod"]

log = logging.getLogger("saa.methods.lite")


def _lite_defaults() -> dict[str, Any]:
    from ..lite import LitePipeline

    return {k: v.default for k, v in inspect.signature(LitePipeline).parameters.items()
            if v.default is not inspect.Parameter.empty and k != "device"}


@register_method
class LiteMethod(Method):
    """Lite mode as a method. ``lite``: a :class:`~saa.lite.LitePipeline` to use (default: one
    with its defaults on the config's device, built when first needed)."""

    name = "lite"
    panels = ("image", "ground_truth", "anomaly_map")

    def __init__(self, config: SaaConfig, lite=None, **settings):
        super().__init__(config)
        self._lite = lite
        self._given = lite is not None
        self._settings = {**_lite_defaults(), **settings}

    @property
    def lite(self):
        if self._lite is None:
            from ..lite import LitePipeline
            from ..models.checkpoints import resolve_device

            self._lite = LitePipeline(device=resolve_device(str(self.config.models.device)), **self._settings)
        return self._lite

    def load(self) -> "LiteMethod":
        _ = self.lite
        return self

    @property
    def label(self) -> str:
        return "lite (ours: cross-image EfficientNet-Lite0 saliency, no Grounding DINO / SAM)"

    @property
    def needs_references(self) -> bool:
        return True

    def _fingerprint_settings(self) -> dict[str, Any]:
        if self._given:
            return self._lite.settings()
        s = dict(self._settings)
        s["stages"] = list(s.get("stages", ()))
        return s

    def describe(self) -> dict[str, Any]:
        s = self._fingerprint_settings()
        settings = {
            "features": f"{s.get('backbone')} stages {list(s.get('stages', ()))}, ~{s.get('size')}^2 px input "
                        f"({'aspect kept' if s.get('keep_aspect') else 'squashed'}), pooled {s.get('pool')}x{s.get('pool')}",
            "reference rule": (f"{s.get('aggregate')} (fraction {s.get('fraction')}), k {s.get('k')}, at most "
                               f"{s.get('max_others') or 'all'} others ({s.get('subset')})"),
            "smoothing": f"sigma {s.get('smooth')} px",
            "combine": str(s.get("combine", s.get("combine_rule"))),
        }
        return {"name": self.name, "label": self.label, "preset": None, "settings": settings,
                "summary": "lite (our addition, not the authors' method): each image scored against the other "
                           "images of its category; pixel scores only, no regions"}

    def fingerprint(self, category: str, references: Optional[Sequence[str]] = None) -> str:
        data = {"method": "lite", "out_size": int(self.config.out_size), "lite": self._fingerprint_settings()}
        if references is not None:
            data["references"] = reference_set_id(references)
        return "lite-" + hash_of(data, 11)

    def reference_features(self, rgb: np.ndarray):
        return self.lite.reference_features(rgb).cpu()

    def bank_settings(self) -> dict[str, Any]:
        return self.lite.bank_settings()

    def predict(self, rgb: np.ndarray, category: str, *, bank=None, index: Optional[int] = None) -> Prediction:
        import time

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

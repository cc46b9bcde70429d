"""The one output type of every method (:mod:`saa.methods`): :class:`Prediction`.

A method that finds regions (SAA+) fills ``candidates``, ``object_boxes`` and ``kept_masks``; one
that only scores pixels (lite) leaves them empty and says so with ``has_regions = False``. The
runner, the results store, ``saa predict``, the demo, the UI and the pictures read nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["Candidate", "Prediction", "DROP_AREA", "DROP_PHRASE", "DROP_TOP_K"]

# why a candidate region was dropped
DROP_AREA = "area"  # box (or mask) area outside the allowed window
DROP_PHRASE = "phrase"  # decoded phrase names the object (filter phrase)
DROP_TOP_K = "top_k"  # not among the K highest re-scored regions


@dataclass
class Candidate:
    """One detector box that passed the score threshold, and what became of it."""

    stage: str  # "object" or "defect"
    prompt_index: int  # which caption of the stage (0-based)
    caption: str  # caption as sent to the detector
    filter: Optional[str]  # filter phrase of that caption (None for the object stage)
    query: int  # detector query index
    box_cxcywh: list[float]  # normalised
    box_xyxy: list[float]  # pixels of the original image
    score: float  # detector score (max token probability)
    phrase: str  # decoded phrase
    area: float  # normalised box area w*h
    mask_area: Optional[float] = None  # mask area / image area (when a mask was made)
    rescored: Optional[float] = None  # p * exp(gamma * mean saliency)
    kept: bool = False
    dropped: Optional[str] = None  # DROP_* reason, None when kept

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


@dataclass
class Prediction:
    """Everything a method computed for one image."""

    category: str
    anomaly_map: np.ndarray  # (out_size, out_size) float32
    anomaly_map_full: np.ndarray  # (H, W) float32
    saliency: Optional[np.ndarray] = None  # (H, W) float32, or None when the method has none
    object_boxes: np.ndarray = field(default_factory=_no_boxes)  # (N, 4) pixel xyxy of kept object boxes
    object_masks: Optional[np.ndarray] = None  # (N, H, W) bool
    candidates: list[Candidate] = field(default_factory=list)  # object and defect candidates, detector order
    kept_masks: Optional[np.ndarray] = None  # (K, H, W) bool masks of the kept defect regions
    object_area: Optional[float] = None
    defect_max_area: Optional[float] = None
    saliency_branch: str = ""  # "single" / "multi" (+ "+cross(<rule>)"); lite: "cross" / "single"
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trace: dict[str, Any] = field(default_factory=dict)  # intermediates when predict(trace=True)
    method: str = "saa"  # the registered method name (saa.methods)
    method_label: str = ""  # what users read, e.g. "SAA+ (preset official)"
    has_regions: bool = True  # False: the method scores pixels only (no boxes, no masks)
    image_score: Optional[float] = None  # None: the max of anomaly_map

    @property
    def score(self) -> float:
        """Image score before any per-category normalisation (max of the map unless the method
        set ``image_score``)."""
        if self.image_score is not None:
            return float(self.image_score)
        return float(self.anomaly_map.max()) if self.anomaly_map.size else 0.0

    @property
    def defects(self) -> list[Candidate]:
        return [c for c in self.candidates if c.stage == "defect"]

    @property
    def kept(self) -> list[Candidate]:
        return [c for c in self.defects if c.kept]

    def summary(self) -> str:
        """One line for a console or a picture caption."""
        if not self.has_regions:
            return f"{self.method_label or self.method}: score {self.score:.4f} (pixel scores only, no regions)"
        return (f"{self.method_label or self.method}: score {self.score:.4f}; {len(self.kept)} region(s) kept of "
                f"{len(self.defects)} candidates")

    def regions_dict(self) -> dict[str, Any]:
        """JSON-ready description of the result (what ``saa predict`` and ``saa run`` write)."""
        out: dict[str, Any] = {
            "method": self.method,
            "method_label": self.method_label,
            "category": self.category,
            "image_size": list(self.anomaly_map_full.shape),
            "out_size": int(self.anomaly_map.shape[0]),
            "score": self.score,
        }
        if self.has_regions:
            out.update(
                object_area=self.object_area,
                defect_max_area=self.defect_max_area,
                object_boxes=np.asarray(self.object_boxes).tolist(),
                candidates=[c.to_dict() for c in self.candidates],
            )
        out.update(saliency_branch=self.saliency_branch, timings_s=self.timings, notes=self.notes)
        return out

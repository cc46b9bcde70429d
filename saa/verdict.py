"""Decisions: the thresholds a labelled run records, and the OK / DEFECT verdict they give an image.

A labelled ``saa run`` records per category in ``metrics.json`` (key ``decision``):

* ``image_threshold`` / ``pixel_threshold``: the F1-optimal thresholds, i.e. the score ``t`` with
  "defect iff score >= t" at which the run's image / pixel F1-max are reached (from the same sort
  as the metric, so F1 at ``t`` IS the reported F1-max), on the run's normalised scale;
* ``normalisation``: how that scale was made (:class:`saa.evaluation.Normalisation`: eval size and
  the category's ``lo`` / ``hi``), so that new maps can be put on it;
* ``method``, ``fingerprint`` (the method's settings, without the image set) and ``out_size``, so that
  a later ``saa predict --thresholds-from RUN`` refuses maps of another method or other settings.

An image's verdict is DEFECT when its (normalised) image score is ``>= image_threshold``, else OK;
its predicted defect mask is its eval-size normalised map ``>= pixel_threshold``, resized to the image
with nearest neighbour (so the mask holds exactly the pixels the pixel metric counted).

Limit: a method that scores each image against the others (``lite``; preset ``improved``) gives
scores that depend on the images scored together: the run's thresholds fit new images only when they
are scored among a set like the run's (many, mostly normal images of the category).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
import numpy as np

from .errors import SaaError
from .evaluation import Normalisation

__all__ = ["DECISION_KEY", "OK", "DEFECT", "Decision", "decision_record", "load_decision", "verdict_of",
           "predicted_mask", "mask_png"]

DECISION_KEY = "decision"
OK, DEFECT = "OK", "DEFECT"
#: the scale of a threshold given by hand without a run (the method's raw image score)
RAW, NORMALISED = "raw", "normalised"


def verdict_of(score: float, threshold: Optional[float]) -> Optional[str]:
    """``DEFECT`` when ``score >= threshold``, ``OK`` below it, None without a threshold."""
    if threshold is None:
        return None
    return DEFECT if float(score) >= float(threshold) else OK


def predicted_mask(norm_map: np.ndarray, pixel_threshold: Optional[float],
                   image_hw: Optional[tuple[int, int]] = None) -> Optional[np.ndarray]:
    """``norm_map >= pixel_threshold`` (bool), resized to ``image_hw`` (nearest); None without a
    threshold. The comparison is done in the map's dtype: a float32 map against a threshold that is a
    float32 value (as recorded) is exact."""
    if pixel_threshold is None:
        return None
    m = np.asarray(norm_map) >= pixel_threshold
    if image_hw is not None and m.shape != tuple(image_hw):
        h, w = int(image_hw[0]), int(image_hw[1])
        m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return m


def mask_png(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as the 0/255 uint8 picture that is written to disk."""
    return np.where(np.asarray(mask), 255, 0).astype(np.uint8)


@dataclass(frozen=True)
class Decision:
    """Thresholds and the scale they are on. ``normalisation`` None: the scale is the method's raw
    image score (a ``--threshold`` given by hand without a run)."""

    image_threshold: Optional[float]
    pixel_threshold: Optional[float] = None
    normalisation: Optional[Normalisation] = None
    method: str = ""
    fingerprint: str = ""
    out_size: Optional[int] = None
    source: str = ""

    @property
    def scale(self) -> str:
        return RAW if self.normalisation is None else NORMALISED

    def verdict(self, score: float) -> Optional[str]:
        return verdict_of(score, self.image_threshold)

    def with_image_threshold(self, value: float, source: str) -> "Decision":
        return Decision(float(value), self.pixel_threshold, self.normalisation, self.method, self.fingerprint,
                        self.out_size, source)

    def check_method(self, method_name: str, fingerprint: str, out_size: int) -> None:
        """A one-line :class:`SaaError` when the maps of ``method_name`` with these settings are not
        on this decision's scale."""
        if not self.method:
            return
        if method_name != self.method:
            raise SaaError(f"{self.source}: the thresholds are for method {self.method}, but this run uses method "
                           f"{method_name}; pass --method {self.method} (or take thresholds from a run of "
                           f"{method_name})")
        if self.out_size is not None and int(out_size) != int(self.out_size):
            raise SaaError(f"{self.source}: the thresholds were made with out_size {self.out_size}, this run has "
                           f"out_size {out_size}; pass --set out_size={self.out_size}")
        if self.fingerprint and fingerprint != self.fingerprint:
            raise SaaError(f"{self.source}: the thresholds were made with other settings of method {self.method} "
                           f"(fingerprint {self.fingerprint}, now {fingerprint}): the scores would not be on the "
                           "same scale; use the run's config (its config.yaml) or rerun it with these settings")


def decision_record(thresholds: Mapping[str, Optional[float]], normalisation: Normalisation, method: str,
                    fingerprint: str, out_size: int) -> dict[str, Any]:
    """The ``decision`` entry of a category in ``metrics.json``."""
    return {
        "image_threshold": thresholds.get("image_threshold"),
        "pixel_threshold": thresholds.get("pixel_threshold"),
        "scale": "normalised image score / normalised map (the scale of the metrics: eval-size maps, "
                 "(A - lo) / (hi - lo) over the category); defect iff value >= threshold",
        "normalisation": normalisation.to_dict(),
        "method": method,
        "fingerprint": fingerprint,
        "out_size": int(out_size),
    }


def _finite_or_none(value, what: str, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise SaaError(f"{where}: {what} is {str(value)[:40]!r}, not a number")
    return float(value)


def load_decision(run_dir, category: str, missing_ok: bool = False) -> Optional[Decision]:
    """The recorded decision of ``category`` in ``run_dir/metrics.json``; a one-line
    :class:`SaaError` naming the file and the problem otherwise (``missing_ok``: None when the run
    has no such category)."""
    run = Path(run_dir)
    mpath = run / "metrics.json" if run.is_dir() or not run.suffix == ".json" else run
    if not mpath.is_file():
        raise SaaError(f"{mpath} not found: --thresholds-from needs the output folder of a labelled `saa run`")
    try:
        result = json.loads(mpath.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SaaError(f"{mpath}: not readable as a metrics file of `saa run` ({type(e).__name__})") from None
    cats = result.get("categories") if isinstance(result, dict) else None
    if not isinstance(cats, dict):
        raise SaaError(f"{mpath}: not a metrics file of `saa run` (no categories)")
    if category not in cats:
        if missing_ok:
            return None
        raise SaaError(f"{mpath}: no category {category!r} in this run (it has: {', '.join(cats) or 'none'})")
    where = f"{mpath} [{category}]"
    info = cats[category]
    rec = info.get(DECISION_KEY) if isinstance(info, dict) else None
    if rec is None:
        why = ("the run's test set is unlabelled" if isinstance(result.get("labelled"), bool)
               and not result["labelled"] else "the run was made before saa recorded thresholds")
        raise SaaError(f"{where}: no thresholds recorded ({why}); run `saa run` on a labelled set "
                       f"(rerunning with the same --out reuses the stored maps)")
    if not isinstance(rec, dict):
        raise SaaError(f"{where}: the `{DECISION_KEY}` entry is not a JSON object")
    image_t = _finite_or_none(rec.get("image_threshold"), "image_threshold", where)
    pixel_t = _finite_or_none(rec.get("pixel_threshold"), "pixel_threshold", where)
    try:
        norm = Normalisation.from_dict(rec.get("normalisation") or {})
    except ValueError as e:
        raise SaaError(f"{where}: {e}") from None
    out_size = rec.get("out_size")
    return Decision(image_t, pixel_t, norm, str(rec.get("method") or ""), str(rec.get("fingerprint") or ""),
                    int(out_size) if isinstance(out_size, int) else None, where)

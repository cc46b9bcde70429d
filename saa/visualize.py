"""Pictures of the results: heat-map overlays and labelled boxes (no metrics, no file layout)."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np


def heat_overlay(rgb: np.ndarray, amap: np.ndarray, alpha: float = 0.5, vmax: Optional[float] = None) -> np.ndarray:
    """Blend a JET colour map of ``amap`` (resized to the image) onto ``rgb``; returns RGB uint8."""
    h, w = rgb.shape[:2]
    a = cv2.resize(np.asarray(amap, dtype=np.float32), (w, h))
    top = float(vmax) if vmax is not None else float(a.max())
    norm = np.zeros_like(a) if top <= 0 else np.clip(a / top, 0, 1)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    weight = (alpha * (norm > 0))[:, :, None] if vmax is None else alpha
    return np.clip(rgb * (1 - weight) + heat * weight, 0, 255).astype(np.uint8)


def draw_boxes(rgb: np.ndarray, boxes: Sequence[Sequence[float]], labels: Sequence[str],
               colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Rectangles with a text label each; returns a new RGB image."""
    out = np.ascontiguousarray(rgb.copy())
    scale = max(0.4, min(out.shape[:2]) / 1000)
    for box, label, color in zip(boxes, labels, colors):
        x0, y0, x1, y1 = [int(round(v)) for v in box]
        cv2.rectangle(out, (x0, y0), (x1, y1), color, max(1, int(2 * scale)))
        if label:
            cv2.putText(out, label, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, color,
                        max(1, int(scale)), cv2.LINE_AA)
    return out


def prediction_overlay(rgb: np.ndarray, prediction) -> np.ndarray:
    """Anomaly heat map with the kept defect boxes (green, caption + re-scored score)."""
    img = heat_overlay(rgb, prediction.anomaly_map_full)
    kept = prediction.kept
    return draw_boxes(img, [c.box_xyxy for c in kept],
                      [f"{c.caption.rstrip('.')[:24]} {c.rescored:.2f}" for c in kept], [(0, 255, 0)] * len(kept))

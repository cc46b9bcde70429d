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


# ----------------------------------------------------------------------------------------------
# per-image panels (original, ground truth, anomaly map, saliency, boxes)

#: Panel kinds, in display order. ``ground_truth`` is left out when no mask is known.
PANELS = ("image", "ground_truth", "anomaly_map", "saliency", "boxes")
PANEL_TITLES = {"image": "image", "ground_truth": "ground truth", "anomaly_map": "anomaly map",
                "saliency": "saliency", "boxes": "regions (kept / dropped)"}
KEPT_COLOR = (0, 220, 0)
DROPPED_COLOR = (160, 160, 160)
DROPPED_PHRASE_COLOR = (230, 60, 60)


def parse_panels(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"image,anomaly_map"`` (or a list; ``"all"`` / None = every panel) -> checked panel tuple."""
    if spec is None:
        return PANELS
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if not items or items == ["all"]:
        return PANELS
    bad = [s for s in items if s not in PANELS]
    if bad:
        raise ValueError(f"unknown panel(s) {', '.join(bad)}; choose from {', '.join(PANELS)} (or all)")
    return tuple(dict.fromkeys(items))


def mask_overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0),
                 alpha: float = 0.45) -> np.ndarray:
    """Tint the mask area of ``rgb`` and draw its outline; returns RGB uint8."""
    h, w = rgb.shape[:2]
    m = np.asarray(mask)
    if m.shape != (h, w):
        m = cv2.resize((m != 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    m = (m != 0)
    out = rgb.astype(np.float32).copy()
    out[m] = out[m] * (1 - alpha) + np.asarray(color, np.float32) * alpha
    out = np.ascontiguousarray(out.clip(0, 255).astype(np.uint8))
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, max(1, min(h, w) // 300))
    return out


def _cand(c, key: str):
    return c.get(key) if isinstance(c, dict) else getattr(c, key, None)


def candidate_boxes(rgb: np.ndarray, candidates: Sequence, show_dropped: bool = True,
                    object_boxes: Optional[Sequence[Sequence[float]]] = None) -> np.ndarray:
    """Defect candidates on the image: kept ones green, dropped ones grey (red when dropped for
    naming the object), each labelled with its caption and (re-scored) score; object boxes thin blue.

    ``candidates``: :class:`saa.pipeline.Candidate` objects or their dicts (a regions ``.json``).
    """
    out = np.ascontiguousarray(rgb.copy())
    if object_boxes is not None and len(object_boxes):
        out = draw_boxes(out, object_boxes, [""] * len(object_boxes), [(70, 130, 255)] * len(object_boxes))
    defects = [c for c in candidates if _cand(c, "stage") == "defect"]
    dropped = [c for c in defects if not _cand(c, "kept")] if show_dropped else []
    kept = [c for c in defects if _cand(c, "kept")]

    def label(c) -> str:
        caption = str(_cand(c, "caption") or "").rstrip(". ")[:22]
        s = _cand(c, "rescored")
        s = _cand(c, "score") if s is None else s
        why = _cand(c, "dropped")
        return f"{caption} {float(s):.2f}" + (f" [{why}]" if why else "")

    colors = [DROPPED_PHRASE_COLOR if _cand(c, "dropped") == "phrase" else DROPPED_COLOR for c in dropped]
    out = draw_boxes(out, [_cand(c, "box_xyxy") for c in dropped], [label(c) for c in dropped], colors)
    # kept boxes last so they are on top
    return draw_boxes(out, [_cand(c, "box_xyxy") for c in kept], [label(c) for c in kept], [KEPT_COLOR] * len(kept))


def panel_images(rgb: np.ndarray, anomaly_map: Optional[np.ndarray] = None, saliency: Optional[np.ndarray] = None,
                 gt_mask: Optional[np.ndarray] = None, candidates: Optional[Sequence] = None,
                 object_boxes: Optional[Sequence[Sequence[float]]] = None,
                 panels: str | Sequence[str] | None = None, vmax: Optional[float] = None) -> dict[str, np.ndarray]:
    """The requested panels that can be drawn from what is given, as ``{kind: RGB uint8}``.

    A panel whose input is missing (no mask, no saliency, no candidates) is left out, not drawn empty.
    ``vmax``: fixed top of the anomaly-map colour scale (e.g. 1.0 for normalised maps).
    """
    out: dict[str, np.ndarray] = {}
    for kind in parse_panels(panels):
        if kind == "image":
            out[kind] = np.ascontiguousarray(rgb)
        elif kind == "ground_truth" and gt_mask is not None:
            out[kind] = mask_overlay(rgb, gt_mask)
        elif kind == "anomaly_map" and anomaly_map is not None:
            out[kind] = heat_overlay(rgb, anomaly_map, vmax=vmax)
        elif kind == "saliency" and saliency is not None:
            out[kind] = heat_overlay(rgb, saliency, alpha=0.5, vmax=float(np.max(saliency)) or None)
        elif kind == "boxes" and candidates is not None:
            out[kind] = candidate_boxes(rgb, candidates, object_boxes=object_boxes)
    return out


def titled(rgb: np.ndarray, title: str, height: int = 256, bar: int = 22) -> np.ndarray:
    """``rgb`` resized to ``height`` rows (aspect kept) with a white title bar above it."""
    h, w = rgb.shape[:2]
    new_w = max(1, int(round(w * height / h)))
    img = cv2.resize(np.ascontiguousarray(rgb), (new_w, height), interpolation=cv2.INTER_AREA)
    top = np.full((bar, new_w, 3), 255, np.uint8)
    cv2.putText(top, title[: max(4, new_w // 8)], (4, bar - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.vstack([top, img])


def compose(panels: dict[str, np.ndarray], height: int = 256, gap: int = 4) -> np.ndarray:
    """Panels side by side, each titled (see :data:`PANEL_TITLES`), on a white background."""
    if not panels:
        raise ValueError("no panel to compose")
    tiles = [titled(img, PANEL_TITLES.get(k, k), height) for k, img in panels.items()]
    sep = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = [tiles[0]]
    for t in tiles[1:]:
        row += [sep, t]
    return np.hstack(row)


def prediction_panels(rgb: np.ndarray, prediction, gt_mask: Optional[np.ndarray] = None,
                      panels: str | Sequence[str] | None = None, height: int = 256) -> np.ndarray:
    """One strip of panels for a :class:`saa.prediction.Prediction` (see :func:`panel_images`)."""
    regions = getattr(prediction, "has_regions", True)
    imgs = panel_images(rgb, anomaly_map=prediction.anomaly_map_full, saliency=prediction.saliency,
                        gt_mask=gt_mask, candidates=prediction.candidates if regions else None,
                        object_boxes=getattr(prediction, "object_boxes", None), panels=panels)
    return compose(imgs, height)


def thumbnail(rgb: np.ndarray, amap: Optional[np.ndarray] = None, side: int = 160, vmax: Optional[float] = None,
              gt_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Small picture (longest side ``side``): heat overlay of ``amap`` and the mask outline, if given."""
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(np.ascontiguousarray(rgb), (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    if amap is not None:
        small = heat_overlay(small, amap, vmax=vmax)
    if gt_mask is not None and np.any(gt_mask):
        m = cv2.resize((np.asarray(gt_mask) != 0).astype(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        small = np.ascontiguousarray(small)
        cv2.drawContours(small, contours, -1, (255, 255, 255), 1)
    return small


def map_to_png(amap: np.ndarray, vmax: Optional[float] = None) -> np.ndarray:
    """A map as a JET-coloured RGB image (0 = dark blue), e.g. to download it as a picture."""
    a = np.asarray(amap, dtype=np.float32)
    top = float(vmax) if vmax is not None else float(a.max())
    norm = np.zeros_like(a) if top <= 0 else np.clip(a / top, 0, 1)
    return cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1].copy()


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of an RGB (or grey) uint8 image."""
    arr = np.asarray(rgb)
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()

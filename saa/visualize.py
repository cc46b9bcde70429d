"""Pictures of the results: heat-map overlays, labelled boxes, colour bars and verdicts (no
metrics, no file layout).

Pictures that decide: a set of maps drawn on ONE colour scale (:class:`MapScale`: the same numbers
give the same colour on every picture of the set), a colour bar with the numbers of that scale beside
every map panel, the image score, and, when a threshold is known, the verdict (OK green / REVIEW amber /
DEFECT red, a frame around every panel) and the outline of the predicted defect pixels on every panel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

OK_COLOR = (0, 170, 0)
DEFECT_COLOR = (220, 0, 0)
#: a reference bank's REVIEW band (between OK and DEFECT: a person looks)
REVIEW_COLOR = (230, 140, 0)
NEUTRAL_COLOR = (60, 60, 60)
#: outline of the predicted defect pixels (pixel threshold), distinct from the white ground truth
PREDICTED_COLOR = (255, 0, 255)


@dataclass(frozen=True)
class MapScale:
    """One colour scale: ``vmin`` is dark blue, ``vmax`` dark red (values outside are clipped);
    ``label`` names the units under the colour bar (e.g. "normalised", "raw")."""

    vmin: float
    vmax: float
    label: str = ""

    @classmethod
    def of(cls, maps: Sequence[np.ndarray], label: str = "raw") -> "MapScale":
        """The joint [min, max] of ``maps`` (one scale for all of them)."""
        lo = min((float(np.min(m)) for m in maps if np.size(m)), default=0.0)
        hi = max((float(np.max(m)) for m in maps if np.size(m)), default=0.0)
        return cls(lo, hi, label)

    def unit(self, amap: np.ndarray) -> np.ndarray:
        """``amap`` mapped to [0, 1] on this scale (all 0 when the scale is empty)."""
        a = np.asarray(amap, dtype=np.float32)
        span = float(self.vmax) - float(self.vmin)
        if not span > 0:
            return np.zeros_like(a)
        return np.clip((a - float(self.vmin)) / span, 0, 1)


def verdict_color(verdict: Optional[str]) -> tuple[int, int, int]:
    return {"OK": OK_COLOR, "DEFECT": DEFECT_COLOR, "REVIEW": REVIEW_COLOR}.get(str(verdict or ""), NEUTRAL_COLOR)


def _jet(unit: np.ndarray) -> np.ndarray:
    return cv2.applyColorMap((np.asarray(unit) * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]


def heat_overlay(rgb: np.ndarray, amap: np.ndarray, alpha: float = 0.5, vmax: Optional[float] = None,
                 vmin: Optional[float] = None, scale: Optional[MapScale] = None) -> np.ndarray:
    """Blend a JET colour map of ``amap`` (resized to the image) onto ``rgb``; returns RGB uint8.

    ``scale`` (or ``vmin`` / ``vmax``): a fixed colour scale, blended everywhere (low values show blue);
    without one the map is scaled to its own maximum and only its non-zero pixels are tinted."""
    h, w = rgb.shape[:2]
    a = cv2.resize(np.asarray(amap, dtype=np.float32), (w, h))
    if scale is None and vmax is not None:
        scale = MapScale(0.0 if vmin is None else float(vmin), float(vmax))
    if scale is not None:
        norm = scale.unit(a)
        weight = alpha
    else:
        top = float(a.max())
        norm = np.zeros_like(a) if top <= 0 else np.clip(a / top, 0, 1)
        weight = (alpha * (norm > 0))[:, :, None]
    heat = _jet(norm)
    return np.clip(rgb * (1 - weight) + heat * weight, 0, 255).astype(np.uint8)


def _fmt(v: float) -> str:
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3f}" if a < 10 else f"{v:.1f}"


def format_apart(*values: Optional[float], digits: Optional[int] = None) -> list[str]:
    """The values as text (the pictures' own format, or ``digits`` significant digits), with more
    significant digits (up to 12) when two that differ as numbers would read the same: a score just
    below a threshold never reads as equal to it. None stays ``""``."""
    nums = sorted({float(v) for v in values if v is not None})

    def apart(texts: dict) -> bool:
        return len(set(texts.values())) == len(nums)

    texts = {v: (_fmt(v) if digits is None else f"{v:.{int(digits)}g}") for v in nums}
    d = 4 if digits is None else int(digits) + 1
    while not apart(texts) and d <= 12:
        texts = {v: f"{v:.{d}g}" for v in nums}
        d += 1
    return ["" if v is None else texts[float(v)] for v in values]


def colorbar(height: int, scale: MapScale, width: int = 62, ticks: int = 5,
             marks: Sequence[tuple[float, str]] = (), over: Optional[float] = None,
             under: Optional[float] = None) -> np.ndarray:
    """A vertical colour bar (RGB uint8, ``height`` rows, white background): the JET ramp of
    ``scale`` with ``ticks`` numbers from ``vmin`` (bottom) to ``vmax`` (top), ``scale.label``
    below; ``marks``: ``(value, text)`` or ``(value, text, rgb)`` lines across the bar (e.g. the
    pixel threshold; default colour that of the predicted-defect outline); a mark's name is left
    out where it would cover a number of the scale or an earlier mark's name.

    ``over`` / ``under``: the map shown reaches beyond the scale (e.g. a normalised score above 1:
    higher than anything in the run); the bar then gets an OPEN END there -- an arrow in the end
    colour (such values are drawn in it) with the value reached written beside it."""
    height = max(40, int(height))
    if over is not None or under is not None:
        width = max(width, 74)
    out = np.full((height, width, 3), 255, np.uint8)
    top, bottom, bar_w = 8, height - 16, 12
    if over is not None:
        top += 16
    if under is not None:
        bottom -= 16
    n = max(2, bottom - top)
    ramp = np.linspace(1.0, 0.0, n, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    out[top:top + n, 2:2 + bar_w] = _jet(ramp)
    cv2.rectangle(out, (2, top), (1 + bar_w, top + n - 1), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def arrow(tip_y: int, base_y: int, unit: float, value: float) -> None:
        pts = np.array([[2, base_y], [1 + bar_w, base_y], [1 + bar_w // 2, tip_y]], np.int32)
        color = tuple(int(v) for v in _jet(np.array([[unit]], np.float32))[0, 0])
        cv2.fillPoly(out, [pts], color)
        cv2.polylines(out, [pts], True, (0, 0, 0), 1)
        text_y = max(9, min(height - 18, (tip_y + base_y) // 2 + 4))
        cv2.putText(out, ("max " if unit else "min ") + _fmt(float(value)), (5 + bar_w, text_y), font, 0.3,
                    (0, 0, 0), 1, cv2.LINE_AA)

    if over is not None:
        arrow(top - 14, top - 2, 1.0, over)
    if under is not None:
        arrow(top + n + 13, top + n + 1, 0.0, under)
    lo, hi = float(scale.vmin), float(scale.vmax)
    tick_ys = []
    for i in range(ticks):
        f = i / (ticks - 1)
        y = int(round(top + (1 - f) * (n - 1)))
        tick_ys.append(y)
        cv2.line(out, (2 + bar_w, y), (5 + bar_w, y), (0, 0, 0), 1)
        cv2.putText(out, _fmt(lo + f * (hi - lo)), (7 + bar_w, min(height - 18, max(10, y + 4))),
                    font, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    written: list[int] = list(tick_ys)  # rows that carry a text: a mark's name never covers another
    for mark in marks:
        value, text = mark[0], mark[1]
        color = tuple(mark[2]) if len(mark) > 2 else PREDICTED_COLOR
        if hi > lo and lo <= value <= hi:
            y = int(round(top + (1 - (value - lo) / (hi - lo)) * (n - 1)))
            cv2.line(out, (0, y), (3 + bar_w, y), color, 2)
            if text and all(abs(y - t) > 10 for t in written):  # never over a number or another name
                cv2.putText(out, text, (7 + bar_w, max(10, y - 3)), font, 0.3, color, 1, cv2.LINE_AA)
                written.append(y)
    if scale.label:
        label = scale.label[:12] + (" open" if over is not None or under is not None else "")
        cv2.putText(out, label, (1, height - 4), font, 0.32, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def beyond(amap: Optional[np.ndarray], scale: Optional[MapScale]) -> tuple[Optional[float], Optional[float]]:
    """``(over, under)``: the largest / smallest value of ``amap`` when it lies beyond ``scale``'s
    top / bottom (None where it does not): what the colour bar's open ends show."""
    if amap is None or scale is None or not np.size(amap):
        return None, None
    a = np.asarray(amap)
    hi, lo = float(np.nanmax(a)), float(np.nanmin(a))
    tol = 1e-6 * max(1.0, abs(float(scale.vmax) - float(scale.vmin)))
    return (hi if hi > float(scale.vmax) + tol else None), (lo if lo < float(scale.vmin) - tol else None)


def legend_lines(verdict: Optional[str] = None, threshold: Optional[float] = None,
                 pixel_threshold: Optional[float] = None, outlined: bool = False, scale: Optional[MapScale] = None,
                 over: Optional[float] = None, under: Optional[float] = None,
                 review_threshold: Optional[float] = None) -> list[str]:
    """What each mark of a picture comes from, one line each: the frame (the image verdict: the
    image score against the IMAGE threshold, and a bank's REVIEW threshold), the magenta outline
    (pixels at or above the PIXEL threshold: chosen on its own, so an OK part may show one and a
    DEFECT part none), and a colour bar's open ends (map values beyond the scale)."""
    lines = []
    if verdict is not None and threshold is not None and review_threshold is not None:
        lines.append(f"frame {verdict}: image score vs DEFECT threshold {_fmt(float(threshold))} and REVIEW "
                     f"threshold {_fmt(float(review_threshold))}")
    elif verdict is not None and threshold is not None:
        lines.append(f"frame {verdict}: image score vs image threshold {_fmt(float(threshold))}")
    if outlined and pixel_threshold is not None:
        lines.append(f"magenta outline: pixels >= pixel threshold {_fmt(float(pixel_threshold))} (its own "
                     "threshold: an OK part may show one)")
    if scale is not None and (over is not None or under is not None):
        parts = []
        if over is not None:
            parts.append(f"up to {_fmt(over)}, above the scale's top {_fmt(float(scale.vmax))}")
        if under is not None:
            parts.append(f"down to {_fmt(under)}, below its bottom {_fmt(float(scale.vmin))}")
        what = " (1 = the highest value of the run)" if scale.label == "normalised" and over is not None else ""
        lines.append(f"map {' and '.join(parts)}{what}: drawn in the end colour, open colour bar")
    return lines


def draw_outline(rgb: np.ndarray, mask: Optional[np.ndarray], color: tuple[int, int, int] = PREDICTED_COLOR,
                 thickness: Optional[int] = None) -> np.ndarray:
    """The outline of ``mask`` (resized to the image, nearest) drawn on a copy of ``rgb``."""
    out = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).copy())
    if mask is None or not np.any(mask):
        return out
    h, w = out.shape[:2]
    m = (np.asarray(mask) != 0).astype(np.uint8)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, thickness or max(1, min(h, w) // 200))
    return out


def framed(rgb: np.ndarray, color: tuple[int, int, int], width: int = 4) -> np.ndarray:
    """``rgb`` with a ``width``-pixel frame of ``color`` painted over its border."""
    out = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).copy())
    out[:width], out[-width:], out[:, :width], out[:, -width:] = color, color, color, color
    return out


def verdict_text(score: Optional[float], verdict: Optional[str] = None, threshold: Optional[float] = None,
                 scale_label: str = "", review_threshold: Optional[float] = None) -> str:
    """``"DEFECT  score 0.913 >= threshold 0.431 (normalised)"`` / ``"OK ..."`` / ``"score 0.913"``;
    ``"REVIEW  score 0.41 >= review 0.38, < threshold 0.52"`` for a bank's REVIEW band."""
    unit = f" ({scale_label})" if scale_label else ""
    if score is None:
        return verdict or ""
    if verdict is None or threshold is None:
        return f"score {_fmt(float(score))}{unit}; no threshold, no verdict"
    s, t, r = format_apart(score, threshold, review_threshold)
    if verdict == "REVIEW" and review_threshold is not None:
        return f"REVIEW  score {s} >= review {r}, < threshold {t}{unit}"
    op = ">=" if verdict == "DEFECT" else "<"
    return f"{verdict}  score {s} {op} threshold {t}{unit}"


def banner(strip: np.ndarray, text: str, color: tuple[int, int, int] = NEUTRAL_COLOR, height: int = 26) -> np.ndarray:
    """``strip`` with a white band above it holding ``text`` in ``color``; the font shrinks (down to
    a small legible size) so that the whole text fits the strip's width, and only then is the text cut."""
    w = strip.shape[1]
    top = np.full((height, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    size = 0.55 * height / 26
    thick = lambda s: max(1, int(round(s * (2 if color != NEUTRAL_COLOR else 1))))  # noqa: E731
    room = max(1, w - 12)
    width = cv2.getTextSize(text, font, size, thick(size))[0][0]
    if width > room:
        size = max(0.35, size * room / width)
        while text and cv2.getTextSize(text, font, size, thick(size))[0][0] > room:
            text = text[:-1]
    cv2.putText(top, text, (6, height - int(8 * height / 26)), font, size, color, thick(size), cv2.LINE_AA)
    return np.vstack([top, strip])


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


def prediction_overlay(rgb: np.ndarray, prediction, *, scale: Optional[MapScale] = None,
                       anomaly_map: Optional[np.ndarray] = None, defect_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Anomaly heat map with the kept defect boxes (green, caption + re-scored score). ``scale``:
    a shared colour scale; ``anomaly_map``: the map to show instead of the prediction's full-size
    one; ``defect_mask``: predicted defect pixels, outlined in magenta."""
    img = heat_overlay(rgb, prediction.anomaly_map_full if anomaly_map is None else anomaly_map, scale=scale)
    if defect_mask is not None:
        img = draw_outline(img, defect_mask)
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

    ``candidates``: :class:`saa.prediction.Candidate` objects or their dicts (a regions ``.json``).
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
                 panels: str | Sequence[str] | None = None, vmax: Optional[float] = None,
                 scale: Optional[MapScale] = None) -> dict[str, np.ndarray]:
    """The requested panels that can be drawn from what is given, as ``{kind: RGB uint8}``.

    A panel whose input is missing (no mask, no saliency, no candidates) is left out, not drawn empty.
    ``vmax``: fixed top of the anomaly-map colour scale (e.g. 1.0 for normalised maps); ``scale``:
    the whole colour scale of the anomaly map (:class:`MapScale`, wins over ``vmax``).
    """
    out: dict[str, np.ndarray] = {}
    for kind in parse_panels(panels):
        if kind == "image":
            out[kind] = np.ascontiguousarray(rgb)
        elif kind == "ground_truth" and gt_mask is not None:
            out[kind] = mask_overlay(rgb, gt_mask)
        elif kind == "anomaly_map" and anomaly_map is not None:
            out[kind] = heat_overlay(rgb, anomaly_map, vmax=vmax, scale=scale)
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


def compose(panels: dict[str, np.ndarray], height: int = 256, gap: int = 4,
            bars: Optional[dict[str, np.ndarray]] = None, frame: Optional[tuple[int, int, int]] = None) -> np.ndarray:
    """Panels side by side, each titled (see :data:`PANEL_TITLES`), on a white background.
    ``bars``: ``{kind: colour bar}`` (see :func:`colorbar`) put right of that panel; ``frame``: a
    colour framing every panel (the verdict)."""
    if not panels:
        raise ValueError("no panel to compose")
    tiles = []
    for k, img in panels.items():
        t = titled(framed(img, frame, max(3, min(img.shape[:2]) // 60)) if frame is not None else img,
                   PANEL_TITLES.get(k, k), height)
        if bars and k in bars:
            b = bars[k]
            if b.shape[0] != t.shape[0]:
                b = np.vstack([np.full((t.shape[0] - b.shape[0], b.shape[1], 3), 255, np.uint8), b]) \
                    if b.shape[0] < t.shape[0] else b[-t.shape[0]:]
            t = np.hstack([t, b])
        tiles.append(t)
    sep = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = [tiles[0]]
    for t in tiles[1:]:
        row += [sep, t]
    return np.hstack(row)


def with_colorbar(img: np.ndarray, scale: MapScale, text: str = "", verdict: Optional[str] = None) -> np.ndarray:
    """``img`` (a heat overlay on ``scale``) with its colour bar on the right, sized to the image, and
    ``text`` above it in the verdict's colour (for single pictures such as the web UI's)."""
    h = img.shape[0]
    bar = colorbar(256, scale)
    bar = cv2.resize(bar, (max(1, int(round(bar.shape[1] * h / 256))), h), interpolation=cv2.INTER_AREA)
    out = np.hstack([np.ascontiguousarray(img), bar])
    return banner(out, text, verdict_color(verdict), height=max(26, h // 12)) if text else out


def prediction_panels(rgb: np.ndarray, prediction, gt_mask: Optional[np.ndarray] = None,
                      panels: str | Sequence[str] | None = None, height: int = 256, *,
                      scale: Optional[MapScale] = None, anomaly_map: Optional[np.ndarray] = None,
                      score: Optional[float] = None, verdict: Optional[str] = None,
                      threshold: Optional[float] = None, defect_mask: Optional[np.ndarray] = None,
                      pixel_threshold: Optional[float] = None, saliency: Optional[np.ndarray] = None,
                      review_threshold: Optional[float] = None) -> np.ndarray:
    """One strip of panels for a :class:`saa.prediction.Prediction` (see :func:`panel_images`).

    Without the keyword arguments: the map on its own scale, as before. ``scale``: the colour scale
    shared by a set of pictures (a colour bar with its numbers is drawn beside the map panel; the
    saliency panel gets its own bar); ``anomaly_map``: the map to show on that scale (default the
    prediction's full-size map); ``score`` (on the scale's units), ``verdict`` (``"OK"`` /
    ``"DEFECT"``) and ``threshold``: written above the strip, the verdict colour framing every panel;
    ``defect_mask``: predicted defect pixels, outlined (magenta) on every panel; ``pixel_threshold``:
    marked on the colour bar; ``saliency``: replaces the prediction's (e.g. reloaded from disk);
    ``review_threshold``: a bank's REVIEW threshold (verdict ``"REVIEW"``: amber frame), written with
    the DEFECT threshold and marked on the colour bar.
    """
    regions = getattr(prediction, "has_regions", True)
    amap = prediction.anomaly_map_full if anomaly_map is None else anomaly_map
    sal = prediction.saliency if saliency is None else saliency
    imgs = panel_images(rgb, anomaly_map=amap, saliency=sal,
                        gt_mask=gt_mask, candidates=prediction.candidates if regions else None,
                        object_boxes=getattr(prediction, "object_boxes", None), panels=panels, scale=scale)
    if scale is None and score is None and verdict is None and defect_mask is None:
        return compose(imgs, height)
    if defect_mask is not None:
        imgs = {k: draw_outline(v, defect_mask) for k, v in imgs.items()}
    bars = {}
    bar_h = height + 22
    over, under = beyond(amap, scale) if "anomaly_map" in imgs else (None, None)
    if scale is not None and "anomaly_map" in imgs:
        marks = [(float(pixel_threshold), "px thr")] if pixel_threshold is not None else []
        if review_threshold is not None:
            marks.append((float(review_threshold), "review", REVIEW_COLOR))
        bars["anomaly_map"] = colorbar(bar_h, scale, marks=marks, over=over, under=under)
    if "saliency" in imgs and sal is not None:
        bars["saliency"] = colorbar(bar_h, MapScale(0.0, float(np.max(sal)) or 1.0, "saliency"))
    strip = compose(imgs, height, bars=bars, frame=verdict_color(verdict) if verdict else None)
    for line in reversed(legend_lines(verdict, threshold, pixel_threshold, defect_mask is not None and
                                      bool(np.any(defect_mask)), scale, over, under, review_threshold)):
        strip = banner(strip, line, NEUTRAL_COLOR, height=18)
    text = verdict_text(score if score is not None else getattr(prediction, "score", None), verdict, threshold,
                        scale.label if scale is not None else "", review_threshold)
    return banner(strip, text, verdict_color(verdict))


def thumbnail(rgb: np.ndarray, amap: Optional[np.ndarray] = None, side: int = 160, vmax: Optional[float] = None,
              gt_mask: Optional[np.ndarray] = None, *, vmin: Optional[float] = None,
              defect_mask: Optional[np.ndarray] = None, verdict: Optional[str] = None) -> np.ndarray:
    """Small picture (longest side ``side``): heat overlay of ``amap`` (on ``vmin``..``vmax`` when
    given), the ground-truth outline (white), the predicted defect outline (magenta) and a frame in
    the verdict's colour, each if given."""
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(np.ascontiguousarray(rgb), (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    if amap is not None:
        small = heat_overlay(small, amap, vmax=vmax, vmin=vmin)
    if gt_mask is not None and np.any(gt_mask):
        small = draw_outline(small, gt_mask, (255, 255, 255), 1)
    if defect_mask is not None:
        small = draw_outline(small, defect_mask, PREDICTED_COLOR, 1)
    if verdict is not None:
        small = framed(small, verdict_color(verdict), 3)
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

"""SPEC §5 evaluation maths, pure (arrays and result dicts in, numbers and tables out).

Per category: the raw maps are resized to ``eval_size`` (option ``dataset.options.eval_size``,
default 400; bicubic for maps, nearest for masks), normalised jointly with
:func:`saa.metrics.normalize_maps`, the image score is the maximum of the normalised map, then
:func:`saa.metrics.compute_all`. The dataset row is the unweighted mean over categories of the
defined values. Used by the runner (:mod:`saa.run`) and the report (:mod:`saa.report`).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np

from .config import SaaConfig
from .errors import ConfigError
from .metrics import compute_all, image_metrics, normalize_maps, normalize_with
from .records import METRIC_KEYS as _RECORD_METRIC_KEYS, NormalisationRecord

__all__ = ["METRIC_KEYS", "METRIC_LABELS", "EVAL_OPTION_KEYS", "DEFAULT_EVAL_SIZE", "split_dataset_options",
           "eval_size_of", "vand_experiment_of", "resize_masks", "category_maps_and_scale", "Normalisation",
           "category_evaluation", "unavailable_metrics", "describe_unavailable", "mean_metrics", "format_table"]

#: Metric keys in table order (values of :func:`saa.metrics.compute_all`); defined with the records.
METRIC_KEYS = _RECORD_METRIC_KEYS
#: Short column titles of the printed / markdown tables.
METRIC_LABELS = {
    "image_auroc": "I-AUROC", "image_ap": "I-AP", "image_f1_max": "I-F1max",
    "pixel_auroc": "P-AUROC", "pixel_ap": "P-AP", "pixel_f1_max": "P-F1max",
    "aupro": "AUPRO@0.3", "region_f1_max": "R-F1max",
}
#: Keys of ``dataset.options`` that belong to the evaluator, not to the dataset class.
EVAL_OPTION_KEYS = ("eval_size", "vand_experiment")
DEFAULT_EVAL_SIZE = 400
NA = "n/a"


def split_dataset_options(options: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """``(dataset class options, evaluator options)`` from a config's ``dataset.options``."""
    options = dict(options or {})
    ev = {k: options.pop(k) for k in EVAL_OPTION_KEYS if k in options}
    return options, ev


def eval_size_of(config: SaaConfig) -> int:
    """``dataset.options.eval_size`` as a positive int (default 400)."""
    value = (config.dataset.options or {}).get("eval_size", DEFAULT_EVAL_SIZE)
    if value is None:
        return DEFAULT_EVAL_SIZE
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"dataset.options.eval_size must be a positive integer, got {value!r}")
    try:
        size = int(value)
    except ValueError:
        raise ConfigError(f"dataset.options.eval_size must be a positive integer, got {value!r}") from None
    if size != float(value) or size < 1:
        raise ConfigError(f"dataset.options.eval_size must be a positive integer, got {value!r}")
    return size


def vand_experiment_of(config: SaaConfig) -> str:
    from .vand import VAND_EXPERIMENT

    value = (config.dataset.options or {}).get("vand_experiment", VAND_EXPERIMENT)
    if not isinstance(value, str) or not value.strip() or "/" in value or "\\" in value:
        raise ConfigError(f"dataset.options.vand_experiment must be a plain folder name, got {value!r}")
    return value


def _resize_maps(maps: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) float32; bicubic (``cv2.INTER_CUBIC``) where a map has another size."""
    out = np.empty((len(maps), size, size), dtype=np.float32)
    for i, m in enumerate(maps):
        m = np.asarray(m, dtype=np.float32)
        out[i] = m if m.shape == (size, size) else cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC)
    return out


def resize_masks(masks: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) bool; nearest neighbour."""
    out = np.empty((len(masks), size, size), dtype=bool)
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.shape == (size, size):
            out[i] = m != 0
        else:
            out[i] = cv2.resize((m != 0).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    return out


#: A category whose resized maps span less than this, relative to max(1, |largest value|), is
#: constant: min-max normalisation would only stretch float noise to [0, 1].
CONSTANT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Normalisation:
    """How a category's maps were put on the scale its metrics (and thresholds) are on: resized to
    ``eval_size`` (bicubic), then ``(A - lo) / (hi - lo)`` with the ``lo`` / ``hi`` of the resized
    maps of the whole category; ``constant``: the category's maps were constant (all set to 0).

    :meth:`apply` puts new maps on that same scale (values of a new image may fall outside [0, 1]:
    above 1 means higher than any map of the category)."""

    eval_size: int
    lo: float
    hi: float
    constant: bool = False

    def apply(self, raw_maps: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(maps (N, E, E) float32, image scores (N,) float64)`` on the category's scale."""
        resized = _resize_maps(raw_maps, self.eval_size)
        maps = np.zeros_like(resized) if self.constant else normalize_with(resized, self.lo, self.hi)
        scores = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64) if len(maps) else np.zeros(0)
        return maps, scores

    def to_dict(self) -> dict[str, Any]:
        return {"eval_size": int(self.eval_size), "lo": float(self.lo), "hi": float(self.hi),
                "constant": bool(self.constant)}

    def to_record(self) -> NormalisationRecord:
        return NormalisationRecord(**self.to_dict())

    @classmethod
    def from_record(cls, rec: NormalisationRecord) -> "Normalisation":
        return cls(int(rec.eval_size), float(rec.lo), float(rec.hi), bool(rec.constant))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Normalisation":
        """From :meth:`to_dict`'s output, checked as a :class:`~saa.records.NormalisationRecord`
        (types, finite bounds, ``lo <= hi``, ``constant`` a boolean); ``ValueError`` otherwise."""
        from .records import RecordError, parse_record

        try:
            return cls.from_record(parse_record(NormalisationRecord, d, "normalisation"))
        except RecordError as e:
            raise ValueError(str(e)) from None


def category_maps_and_scale(raw_maps: Sequence[np.ndarray] | np.ndarray, eval_size: int, category: str = "category"
                            ) -> tuple[np.ndarray, np.ndarray, Optional[str], Normalisation]:
    """SPEC §5 steps 1–3 for one category: ``(normalised maps (N, E, E) float32 in [0, 1], image scores
    (N,), note, the Normalisation applied)``.

    Maps are resized to ``eval_size`` first (bicubic), then normalised jointly over the category, so
    the normalised values stay within [0, 1] and the largest pixel of the category is 1. A category
    whose maps are constant up to float noise (identical or blank images) gets every map and score 0
    and a note saying so (the note is None otherwise)."""
    resized = _resize_maps(raw_maps, eval_size)
    if not len(resized):
        return resized, np.zeros(0), None, Normalisation(eval_size, 0.0, 0.0, True)
    lo, hi = float(resized.min()), float(resized.max())
    if hi - lo <= CONSTANT_TOLERANCE * max(1.0, abs(hi), abs(lo)):
        note = (f"{category}: every anomaly map is constant up to float noise (range {hi - lo:.2g}); the maps "
                "were set to zero instead of stretching the noise to [0, 1], so the metrics are those of a "
                "detector that finds nothing (AUROC 50)")
        return np.zeros_like(resized), np.zeros(len(resized)), note, Normalisation(eval_size, lo, hi, True)
    maps = normalize_maps(resized)
    scores = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)
    return maps, scores, None, Normalisation(eval_size, lo, hi, False)


def _pct(value: float) -> Optional[float]:
    v = float(value)
    return None if math.isnan(v) else 100.0 * v


def _threshold(value) -> Optional[float]:
    v = float(value)
    return None if math.isnan(v) else v


def category_evaluation(labels: Sequence[int], scores: np.ndarray, masks: Optional[np.ndarray], maps: np.ndarray
                        ) -> tuple[dict[str, Optional[float]], dict[str, Optional[float]]]:
    """All metrics of one category in percent (None where undefined; ``masks=None``: image metrics
    only) and the F1-optimal thresholds on the same (normalised) scale, from the same sorts:
    ``{"image_threshold", "pixel_threshold"}``, each the score ``t`` with "defect iff score >= t" at
    which image / pixel F1-max are reached (the highest such ``t``); None where F1-max is undefined
    (no defective image / pixel, or no masks). Why a metric is undefined: :func:`unavailable_metrics`."""
    labels = np.asarray(labels, dtype=np.int64)
    if masks is None:
        img = image_metrics(labels, scores)
        values = {k: float("nan") for k in METRIC_KEYS}
        values.update(image_auroc=img["auroc"], image_ap=img["ap"], image_f1_max=img["f1_max"],
                      image_f1_threshold=img["f1_threshold"], pixel_f1_threshold=float("nan"))
    else:
        values = compute_all(labels, scores, masks, maps, thresholds=True)
    thresholds = {"image_threshold": _threshold(values["image_f1_threshold"]),
                  "pixel_threshold": _threshold(values["pixel_f1_threshold"])}
    return {k: _pct(values[k]) for k in METRIC_KEYS}, thresholds


_IMAGE_KEYS = ("image_auroc", "image_ap", "image_f1_max")
_PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro", "region_f1_max")


def unavailable_metrics(normal: int, anomalous: int, has_masks: bool, defect_pixels: Optional[bool] = None
                        ) -> dict[str, str]:
    """Why each metric of a labelled category cannot be computed (metric key -> reason; empty when
    every metric is defined): ``normal`` / ``anomalous`` image counts, ``has_masks`` whether the
    dataset has ground-truth masks, ``defect_pixels`` whether those masks mark any pixel."""
    out: dict[str, str] = {}
    if anomalous == 0 and normal == 0:
        return {k: "the category has no image" for k in METRIC_KEYS}
    if anomalous == 0:
        why = "no anomalous image in the category (these metrics need defective images)"
        return {k: why for k in METRIC_KEYS}
    if normal == 0:
        out["image_auroc"] = "no normal image in the category (AUROC needs both normal and anomalous images)"
    if not has_masks:
        why = "the dataset has no ground-truth masks (pixel metrics need them; masks are optional)"
        out.update({k: why for k in _PIXEL_KEYS})
    elif defect_pixels is False:
        why = "the ground-truth masks mark no defect pixel"
        out.update({k: why for k in _PIXEL_KEYS})
    return out


def describe_unavailable(category: str, unavailable: Mapping[str, str]) -> list[str]:
    """One line per reason: ``<category>: P-AUROC, P-AP, ... not computed: <reason>``."""
    by_reason: dict[str, list[str]] = {}
    for k, why in unavailable.items():
        by_reason.setdefault(why, []).append(METRIC_LABELS.get(k, k))
    return [f"{category}: {', '.join(keys)} not computed: {why}" for why, keys in by_reason.items()]


def mean_metrics(per_category: Mapping[str, Mapping[str, Optional[float]]]) -> dict[str, Optional[float]]:
    """Unweighted mean over categories of each metric; undefined (None/nan) values are left out."""
    out: dict[str, Optional[float]] = {}
    for k in METRIC_KEYS:
        vals = [v[k] for v in per_category.values() if v.get(k) is not None and not math.isnan(v[k])]
        out[k] = float(np.mean(vals)) if vals else None
    return out


# ----------------------------------------------------------------------------------------------
# tables


def _cell(value: Optional[float]) -> str:
    return NA if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _rows(result: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    rows = []
    for cat, info in result["categories"].items():
        rows.append((cat, str(info["counts"]["images"]), [_cell(info["metrics"][k]) for k in METRIC_KEYS]))
    total = sum(info["counts"]["images"] for info in result["categories"].values())
    rows.append(("mean", str(total), [_cell(result["mean"][k]) for k in METRIC_KEYS]))
    return rows


def format_table(result: Mapping[str, Any], fmt: str = "text") -> str:
    """The per-category table of a run result: ``text`` (aligned), ``md`` or ``csv``.

    Values are percentages with 2 decimals; undefined ones are ``n/a``. The ``images`` column of
    the ``mean`` row is the total number of images.
    """
    rows = _rows(result)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["category", "images", *METRIC_KEYS])
        for cat, n, cells in rows:
            w.writerow([cat, n, *cells])
        return buf.getvalue()
    header = ["category", "images", *(METRIC_LABELS[k] for k in METRIC_KEYS)]
    body = [[cat, n, *cells] for cat, n, cells in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for r in body:
            cells = [f"**{c}**" if r[0] == "mean" else c for c in r]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    if fmt != "text":
        raise ValueError(f"unknown table format {fmt!r} (text, md or csv)")
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    def line(r):
        return "  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r))
    sep = "  ".join("-" * w for w in widths)
    out = [line(header), sep]
    for r in body:
        if r[0] == "mean":
            out.append(sep)
        out.append(line(r))
    return "\n".join(out) + "\n"

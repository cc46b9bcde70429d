"""Evaluation metrics of SAA+ (SPEC section 5): pure functions on NumPy arrays.

Everything here is exact with ties (SAA maps are mostly zeros, so tie groups are huge) and built for
hundreds of millions of pixels:

* The binary metrics (AUROC, AP, F1-max) all come from one sorted view of the scores,
  :func:`binary_curve_counts`. Instead of an ``argsort`` of all scores (8 bytes per pixel of int64
  indices, and ~4x slower than a plain sort on float32), the scores are sorted once with
  ``np.sort`` (a copy in the input dtype: 4 bytes per pixel for float32) and the positive scores
  (a few percent of the pixels) are sorted separately. Each distinct score value is one threshold;
  the number of scores ``>= t`` comes from the position of the first occurrence of ``t`` in the
  sorted array, the number of positives ``>= t`` from a ``searchsorted`` in the sorted positives.
  Arrays proportional to the number of *distinct* thresholds are int64 / float64; nothing of the
  size of the input is ever converted to float64.
* :func:`aupro` uses the same scheme with per-pixel weights for the defect pixels
  (``1 / (|component| * number of components)``), so it also needs only one sort of all pixels.
* :func:`compute_all` shares the one sort of all pixels between the pixel metrics and AUPRO.

Policy for undefined cases: a metric that is not defined returns ``float("nan")``; no exception,
no warning. Specifically

* AUROC: nan unless both classes are present.
* AP and F1-max: nan when there is no positive. With positives but no negative they are defined
  (precision is 1 everywhere) and equal to 1.0, exactly as scikit-learn computes them.
* AUPRO: nan when there is no ground-truth defect pixel or no normal pixel.
* region F1-max: nan when there is no ground-truth component (or no threshold).
* Empty inputs: nan.

Labels and masks are binary with "non-zero = positive" (bool, 0/1 or 0/255 all work); scores may
be any real dtype (float32 is kept as float32). NaN scores are a caller bug and raise ``ValueError``
(scikit-learn raises too); mismatched shapes raise ``ValueError``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "CurveCounts",
    "binary_curve_counts",
    "binary_metrics",
    "roc_auc",
    "average_precision",
    "f1_max",
    "image_metrics",
    "pixel_metrics",
    "aupro",
    "region_f1_max",
    "compute_all",
    "normalize_maps",
    "normalize_with",
    "DEFAULT_REGION_THRESHOLDS",
]

NAN = float("nan")

#: Number of evenly spaced thresholds over [min, max] of the maps used by :func:`region_f1_max`.
DEFAULT_REGION_THRESHOLDS = 100

# Pixel budget of one batch of images in region_f1_max (labels are int32: 4 bytes per pixel).
_REGION_CHUNK_PIXELS = 1 << 24

_STRUCT_2D = np.ones((3, 3), dtype=bool)  # 8-connectivity


# ----------------------------------------------------------------------------------------------
# input helpers
# ----------------------------------------------------------------------------------------------
def _as_bool_flat(labels) -> np.ndarray:
    """Flattened boolean view of a binary label array (non-zero = positive), copying only if needed."""
    lab = np.asarray(labels).reshape(-1)
    if lab.dtype == np.bool_:
        return lab
    if lab.dtype in (np.uint8, np.int8) and lab.size:
        # A 0/1 byte array can be reinterpreted without a copy.
        if int(lab.max()) <= 1 and int(lab.min()) >= 0:
            return lab.view(np.bool_)
    return lab != 0


def _as_score_flat(scores) -> np.ndarray:
    s = np.asarray(scores)
    if s.dtype == np.bool_:
        s = s.view(np.uint8)
    if s.dtype.kind not in "fiu":
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    return s.reshape(-1)


def _as_stack(a, name: str) -> np.ndarray:
    """(N, H, W) array from an (N, H, W) array, an (H, W) array or a sequence of equal-shape maps."""
    arr = np.asarray(a)
    if name == "maps" and arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W), got {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------------------
# the shared sort
# ----------------------------------------------------------------------------------------------
class _SortedScores(NamedTuple):
    """All scores sorted once: distinct values ascending and where each first occurs."""

    values: np.ndarray  # distinct score values, ascending (input dtype)
    first: np.ndarray  # int64 index of each value's first occurrence in the sorted scores
    n: int  # number of scores


def _sort_scores_torch(flat: np.ndarray, device) -> _SortedScores:
    """:func:`_sort_scores` with the sort and the tie collapsing done by torch on ``device``
    (e.g. ``"cuda"``); only the distinct values and their first positions come back."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(flat)).to(device)
    s = torch.sort(t).values
    del t
    n = int(s.numel())
    if n and s.dtype.is_floating_point and bool(torch.isnan(s[-1])):
        raise ValueError("scores contain NaN")
    if n == 0:
        return _SortedScores(flat[:0].copy(), np.zeros(0, np.int64), 0)
    new = torch.empty(n, dtype=torch.bool, device=s.device)
    new[0] = True
    torch.ne(s[1:], s[:-1], out=new[1:])
    first = torch.nonzero(new).flatten()
    del new
    values = s[first].cpu().numpy()
    return _SortedScores(values, first.cpu().numpy().astype(np.int64, copy=False), n)


def _sort_scores(flat: np.ndarray, device=None) -> _SortedScores:
    if device is not None and str(device) != "numpy":
        return _sort_scores_torch(flat, device)
    s = np.sort(flat)  # one sort; a copy in the input dtype
    n = int(s.size)
    if n and s.dtype.kind == "f" and np.isnan(s[-1]):  # NaNs sort last
        raise ValueError("scores contain NaN")
    if n == 0:
        return _SortedScores(s, np.zeros(0, np.int64), 0)
    new = np.empty(n, dtype=np.bool_)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    first = np.flatnonzero(new)
    del new
    values = s[first]
    return _SortedScores(values, first, n)


def _count_ge(sorted_scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value t, how many of the ascending ``sorted_scores`` are >= t (int64)."""
    idx = np.searchsorted(sorted_scores, values, side="left").astype(np.int64, copy=False)
    np.subtract(sorted_scores.size, idx, out=idx)
    return idx


class CurveCounts(NamedTuple):
    """Cumulative counts at each distinct threshold, thresholds in *descending* order.

    ``tps[i]`` / ``fps[i]``: positives / negatives with score ``>= thresholds[i]``; the last entry
    holds the totals (``n_pos`` / ``n_neg``). Same content as scikit-learn's ``_binary_clf_curve``.
    """

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray
    n_pos: int
    n_neg: int


def _curve_from_sorted(srt: _SortedScores, pos_sorted: np.ndarray) -> CurveCounts:
    """Counts from the sorted scores and the (ascending) sorted positive scores."""
    tp_ge = _count_ge(pos_sorted, srt.values)  # ascending threshold order
    all_ge = srt.n - srt.first
    fp_ge = all_ge - tp_ge
    n_pos = int(pos_sorted.size)
    return CurveCounts(srt.values[::-1], tp_ge[::-1], fp_ge[::-1], n_pos, srt.n - n_pos)


def binary_curve_counts(labels, scores, device=None) -> CurveCounts:
    """Sort the scores once (tie groups collapsed) and count TP / FP at every distinct threshold.

    A sample is predicted positive at threshold ``t`` iff ``score >= t``. Memory: one copy of the
    scores in their own dtype, the positive scores, and int64 arrays over the distinct thresholds.
    ``device``: sort with torch there (e.g. ``"cuda"``) instead of NumPy; same counts.
    """
    lab = _as_bool_flat(labels)
    flat = _as_score_flat(scores)
    if lab.size != flat.size:
        raise ValueError(f"labels and scores differ in size: {lab.size} vs {flat.size}")
    srt = _sort_scores(flat, device)
    return _curve_from_sorted(srt, np.sort(flat[lab]))


# ----------------------------------------------------------------------------------------------
# metrics from the counts
# ----------------------------------------------------------------------------------------------
def _auroc_from_counts(c: CurveCounts) -> float:
    if c.n_pos == 0 or c.n_neg == 0:
        return NAN
    tps, fps = c.tps, c.fps
    dfp = np.diff(fps, prepend=0)
    tsum = tps.copy()
    tsum[1:] += tps[:-1]
    if 2.0 * c.n_pos * c.n_neg < 2.0**62:  # exact integer trapezoid sum
        twice_area = int(np.dot(dfp, tsum))
    else:  # pragma: no cover - more than ~3e9 samples
        twice_area = float(np.dot(dfp.astype(np.float64), tsum.astype(np.float64)))
    return float(twice_area / (2.0 * c.n_pos * c.n_neg))


def _ap_from_counts(c: CurveCounts) -> float:
    if c.n_pos == 0:
        return NAN
    tps, fps = c.tps, c.fps
    dtp = np.diff(tps, prepend=0)
    idx = np.flatnonzero(dtp)  # only thresholds where recall grows contribute
    tp = tps[idx].astype(np.float64)
    precision = tp / (tp + fps[idx])
    return float(np.dot(dtp[idx].astype(np.float64), precision) / c.n_pos)


def _f1_from_counts(c: CurveCounts) -> tuple[float, float]:
    if c.n_pos == 0:
        return NAN, NAN
    tp = c.tps.astype(np.float64)
    # F1 = 2PR / (P + R) = 2 TP / (TP + FP + n_pos); 0 where TP == 0 (P + R == 0 or P == 0).
    f1 = 2.0 * tp / (tp + c.fps + c.n_pos)
    i = int(np.argmax(f1))
    return float(f1[i]), float(c.thresholds[i])


def _metrics_from_counts(c: CurveCounts) -> dict:
    f1, thr = _f1_from_counts(c)
    return {"auroc": _auroc_from_counts(c), "ap": _ap_from_counts(c), "f1_max": f1, "f1_threshold": thr}


def binary_metrics(labels, scores, device=None) -> dict:
    """AUROC, AP, F1-max and the threshold reaching F1-max, from one shared sort.

    Returns ``dict(auroc, ap, f1_max, f1_threshold)``; equal (to ~1e-15) to scikit-learn's
    ``roc_auc_score``, ``average_precision_score`` and the maximum of ``2PR/(P+R)`` (0 where
    ``P+R == 0``) over ``precision_recall_curve``. ``f1_threshold`` is the score value ``t`` with
    "positive iff score >= t" at the (highest-threshold) maximum. Undefined entries are nan (see the
    module docstring). ``device``: where the sort runs (see :func:`binary_curve_counts`).
    """
    return _metrics_from_counts(binary_curve_counts(labels, scores, device))


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (nan unless both classes are present)."""
    return _auroc_from_counts(binary_curve_counts(labels, scores))


def average_precision(labels, scores) -> float:
    """Average precision, scikit-learn's step-wise definition (nan without positives)."""
    return _ap_from_counts(binary_curve_counts(labels, scores))


def f1_max(labels, scores) -> float:
    """Maximum F1 over all thresholds of the precision-recall curve (nan without positives)."""
    return _f1_from_counts(binary_curve_counts(labels, scores))[0]


def image_metrics(labels, image_scores) -> dict:
    """Image-level ``dict(auroc, ap, f1_max, f1_threshold)`` from per-image labels and scores."""
    return binary_metrics(labels, image_scores)


def pixel_metrics(masks, maps, device=None) -> dict:
    """Pixel-level ``dict(auroc, ap, f1_max, f1_threshold)``, pooled over all pixels of all images.

    ``masks``: (N, H, W) binary; ``maps``: (N, H, W) scores. Both are flattened without a copy when
    they are contiguous. ``device`` (e.g. ``"cuda"``): sort with torch there.
    """
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    if masks.shape != maps.shape:
        raise ValueError(f"masks and maps differ in shape: {masks.shape} vs {maps.shape}")
    return binary_metrics(masks, maps, device)


# ----------------------------------------------------------------------------------------------
# AUPRO
# ----------------------------------------------------------------------------------------------
def _defect_pixels(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of all defect pixels and their weights 1/|component| (8-connected, per image)."""
    scores, weights = [], []
    n_comp = 0
    for mask, amap in zip(masks, maps):
        m = mask if mask.dtype == np.bool_ else mask != 0
        if not m.any():
            continue
        lab, k = ndimage.label(m, structure=_STRUCT_2D)
        sizes = np.bincount(lab.ravel(), minlength=k + 1)
        ids = lab[m]
        scores.append(amap[m])
        weights.append(1.0 / sizes[ids])
        n_comp += int(k)
    if not scores:
        return np.zeros(0, maps.dtype), np.zeros(0, np.float64), 0
    return np.concatenate(scores), np.concatenate(weights), n_comp


def _integrate_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under (x, y) (x ascending) from x[0] to x_max, interpolating y at x_max.

    Same as the MVTec AD evaluation code's ``trapezoid(x, y, x_max)``.
    """
    ins = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    xs, ys = x[:ins], y[:ins]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    if xs[-1] < x_max and ins < x.size:
        x0, x1, y0, y1 = x[ins - 1], x[ins], y[ins - 1], y[ins]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y_at + y0) * (x_max - x0)
    return area


def _sort_defects(def_scores: np.ndarray, def_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Defect scores ascending and the cumulative weights (cw[i] = sum of the i lowest weights)."""
    order = np.argsort(def_scores, kind="stable")
    ds = def_scores[order]
    cw = np.empty(ds.size + 1, dtype=np.float64)
    cw[0] = 0.0
    np.cumsum(def_weights[order], out=cw[1:])
    return ds, cw


def _aupro_from_sorted(srt: _SortedScores, ds: np.ndarray, cw: np.ndarray, n_comp: int, fpr_limit: float) -> float:
    n_def = int(ds.size)
    n_normal = srt.n - n_def
    if n_comp == 0 or n_def == 0 or n_normal == 0:
        return NAN
    idx = np.searchsorted(ds, srt.values, side="left")  # defect pixels below each threshold
    # ascending thresholds -> reverse to get FPR ascending
    normal_ge = (srt.n - srt.first) - (n_def - idx)
    fpr = np.empty(normal_ge.size + 2, dtype=np.float64)
    pro = np.empty_like(fpr)
    fpr[0] = pro[0] = 0.0
    fpr[-1] = pro[-1] = 1.0
    np.divide(normal_ge[::-1], n_normal, out=fpr[1:-1])
    np.subtract(cw[-1], cw[idx[::-1]], out=pro[1:-1])
    pro[1:-1] /= n_comp
    np.minimum(fpr, 1.0, out=fpr)
    np.minimum(pro, 1.0, out=pro)
    return float(_integrate_to(fpr, pro, fpr_limit) / fpr_limit)


def _check_limit(fpr_limit: float) -> float:
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    return fpr_limit


def aupro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD protocol).

    Ground-truth regions are the 8-connected components of each image's mask. For every distinct
    score value ``t`` (predicted anomalous iff ``score >= t``): FPR = false-positive pixels / all
    normal pixels (pixels outside any defect, pooled over images), PRO = mean over all components of
    the fraction of the component's pixels predicted anomalous. The curve (0,0), (FPR(t), PRO(t))
    for t descending, (1,1) is integrated with the trapezoid rule up to ``fpr_limit`` (PRO linearly
    interpolated at the limit) and divided by ``fpr_limit``. Computed with one sort of all pixels
    and per-pixel weights. nan when there is no defect or no normal pixel.
    """
    fpr_limit = _check_limit(fpr_limit)
    masks = _as_stack(masks, "masks")
    maps = _as_stack(maps, "maps")
    if masks.shape != maps.shape:
        raise ValueError(f"masks and maps differ in shape: {masks.shape} vs {maps.shape}")
    def_scores, def_weights, n_comp = _defect_pixels(masks, maps)
    if n_comp == 0:
        return NAN
    srt = _sort_scores(_as_score_flat(maps))
    ds, cw = _sort_defects(def_scores, def_weights)
    return _aupro_from_sorted(srt, ds, cw, n_comp, fpr_limit)


# ----------------------------------------------------------------------------------------------
# region F1
# ----------------------------------------------------------------------------------------------
def _default_thresholds(maps: np.ndarray) -> np.ndarray:
    if maps.size == 0:
        return np.zeros(0)
    lo, hi = float(np.min(maps)), float(np.max(maps))
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError("maps contain NaN")
    return np.linspace(lo, hi, DEFAULT_REGION_THRESHOLDS)


def _threshold_in_dtype(t: float, dtype: np.dtype):
    """A threshold ``t'`` of ``dtype`` with ``x >= t'`` iff ``x >= t`` for every x of that dtype.

    Comparing a float32 map with a float64 scalar makes NumPy convert the whole map; comparing with
    the smallest float32 that is ``>= t`` gives the same result several times faster.
    """
    if dtype.kind != "f" or dtype.itemsize >= 8:
        return t
    info = np.finfo(dtype)
    if t > float(info.max):
        return np.array(np.inf, dtype=dtype)[()]
    if t < float(info.min):
        return np.array(t if t == -math.inf else info.min, dtype=dtype)[()]
    c = np.array(t, dtype=dtype)[()]
    if float(c) < t:
        c = np.nextafter(c, np.array(np.inf, dtype=dtype))
    return c


def region_f1_max(masks, maps, iou_threshold: float = 0.6, thresholds: Sequence[float] | None = None) -> float:
    """Region-level F1-max (the paper's F_r, SPEC section 5 step 4).

    For each threshold ``t``: predicted regions are the 8-connected components of ``map >= t`` in
    each image, ground-truth regions the 8-connected components of each mask. A predicted region is
    a *hit* if its IoU with some ground-truth region of the same image is ``>= iou_threshold``.
    Pooled over all images: precision = hits / predicted regions (0 if there is none), recall =
    hits / ground-truth regions, capped at 1, F1 = 2PR/(P+R) (0 if P+R == 0); the result is the
    maximum over the thresholds.

    Recall is "hits / ground-truth regions" as SPEC says. For ``iou_threshold > 0.5`` (the default
    0.6) a ground-truth region can be hit by at most one predicted region (two disjoint regions
    cannot both cover more than half of it), so this equals "matched ground-truth regions / all
    ground-truth regions"; for lower thresholds several hits may share a region, hence the cap at 1.

    ``thresholds``: defaults to ``DEFAULT_REGION_THRESHOLDS`` (100) evenly spaced values over
    [min, max] of all maps (``np.linspace``). nan when there is no ground-truth region.
    """
    masks = _as_stack(masks, "masks")
    maps = _as_stack(maps, "maps")
    if masks.shape != maps.shape:
        raise ValueError(f"masks and maps differ in shape: {masks.shape} vs {maps.shape}")
    thr = _default_thresholds(maps) if thresholds is None else np.asarray(thresholds, dtype=np.float64).ravel()
    n_t = thr.size
    hits = np.zeros(n_t, dtype=np.int64)
    n_pred = np.zeros(n_t, dtype=np.int64)
    n_gt = 0
    # Label a batch of images at once: a 3-D structure that only connects within a slice.
    struct = np.zeros((3, 3, 3), dtype=bool)
    struct[1] = True
    n_img, h, w = masks.shape
    per_chunk = max(1, _REGION_CHUNK_PIXELS // max(1, h * w))
    pred_buf = np.empty((min(per_chunk, n_img), h, w), dtype=bool)
    for start in range(0, n_img, per_chunk):
        sl = slice(start, start + per_chunk)
        m = masks[sl]
        m = m if m.dtype == np.bool_ else m != 0
        amap = maps[sl]
        gt_lab, k_gt = ndimage.label(m, structure=struct)
        n_gt += int(k_gt)
        if k_gt:
            gt_flat = gt_lab.reshape(-1)
            gt_pos = np.flatnonzero(gt_flat)
            gt_ids = gt_flat[gt_pos].astype(np.int64)
            gt_sizes = np.bincount(gt_ids, minlength=k_gt + 1)
        del gt_lab
        for ti in range(n_t):
            pred = np.greater_equal(amap, _threshold_in_dtype(float(thr[ti]), amap.dtype), out=pred_buf[: amap.shape[0]])
            pred_lab, k_pred = ndimage.label(pred, structure=struct)
            n_pred[ti] += int(k_pred)
            if k_pred == 0 or k_gt == 0:
                continue
            pred_flat = pred_lab.reshape(-1)
            p_at_gt = pred_flat[gt_pos]
            inside = p_at_gt > 0
            if not inside.any():
                continue
            key = p_at_gt[inside].astype(np.int64) * (k_gt + 1) + gt_ids[inside]
            ukey, inter = np.unique(key, return_counts=True)
            up, ug = np.divmod(ukey, k_gt + 1)
            # sizes from the predicted pixels only (cheaper than a bincount over the whole batch)
            pred_sizes = np.bincount(pred_flat[pred.reshape(-1)], minlength=k_pred + 1)
            iou = inter / (pred_sizes[up] + gt_sizes[ug] - inter)
            hits[ti] += int(np.unique(up[iou >= iou_threshold]).size)
    if n_gt == 0 or n_t == 0:
        return NAN
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, hits / np.maximum(n_pred, 1), 0.0)
        recall = np.minimum(hits / n_gt, 1.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2.0 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
    return float(np.max(f1))


# ----------------------------------------------------------------------------------------------
# everything for one category
# ----------------------------------------------------------------------------------------------
def compute_all(labels, image_scores, masks, maps, fpr_limit: float = 0.3, iou_threshold: float = 0.6,
                device=None, thresholds: bool = False) -> dict:
    """All SPEC section 5 metrics of one category, as fractions in [0, 1] (nan where undefined).

    Keys: image_auroc, image_ap, image_f1_max, pixel_auroc, pixel_ap, pixel_f1_max, aupro,
    region_f1_max. The pixel metrics and AUPRO share one sort of all pixels. ``device`` (e.g.
    ``"cuda"``): do that sort with torch on this device (same values; see :func:`_sort_scores_torch`).
    ``thresholds=True`` adds ``image_f1_threshold`` and ``pixel_f1_threshold``: the score values
    ``t`` ("positive iff score >= t") at which image / pixel F1-max are reached (from the same sorts).
    """
    fpr_limit = _check_limit(fpr_limit)
    img = binary_metrics(labels, image_scores)
    masks = _as_stack(masks, "masks")
    maps = _as_stack(maps, "maps")
    if masks.shape != maps.shape:
        raise ValueError(f"masks and maps differ in shape: {masks.shape} vs {maps.shape}")
    flat = _as_score_flat(maps)
    srt = _sort_scores(flat, device)
    def_scores, def_weights, n_comp = _defect_pixels(masks, maps)
    ds, cw = _sort_defects(def_scores, def_weights)  # the defect pixels are the positives
    pix = _metrics_from_counts(_curve_from_sorted(srt, ds))
    pro = _aupro_from_sorted(srt, ds, cw, n_comp, fpr_limit)
    del srt, ds, cw
    rf1 = region_f1_max(masks, maps, iou_threshold=iou_threshold)
    out = {
        "image_auroc": img["auroc"],
        "image_ap": img["ap"],
        "image_f1_max": img["f1_max"],
        "pixel_auroc": pix["auroc"],
        "pixel_ap": pix["ap"],
        "pixel_f1_max": pix["f1_max"],
        "aupro": pro,
        "region_f1_max": rf1,
    }
    if thresholds:
        out.update(image_f1_threshold=img["f1_threshold"], pixel_f1_threshold=pix["f1_threshold"])
    return out


def normalize_maps(maps) -> np.ndarray:
    """Joint min-max normalisation of all maps of a category (SPEC section 5 step 2).

    ``(A - min) / (max - min)`` with min and max over all maps, returned as float32 in [0, 1] (the
    maximum maps to exactly 1.0). If ``max == min`` (or there are no pixels) the result is all
    zeros. Arithmetic is float64 one map at a time, so no NaN/inf is produced from finite input and
    no float64 copy of the whole stack is made. Non-finite input raises ``ValueError``.
    """
    arr = np.asarray(maps)
    out = np.zeros(arr.shape, dtype=np.float32)
    if arr.size == 0:
        return out
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("maps contain NaN or inf")
    return normalize_with(arr, lo, hi)


def normalize_with(maps, lo: float, hi: float) -> np.ndarray:
    """``(A - lo) / (hi - lo)`` as float32, with the arithmetic of :func:`normalize_maps` (which is
    this with the maps' own min and max): maps normalised with a category's recorded ``lo`` / ``hi``
    get bit for bit the values the category's own maps got. Values outside ``[lo, hi]`` fall outside
    [0, 1] (not clipped). ``hi <= lo``: all zeros."""
    arr = np.asarray(maps)
    out = np.zeros(arr.shape, dtype=np.float32)
    lo, hi = float(lo), float(hi)
    if arr.size == 0 or not hi > lo:
        return out
    scale = 1.0
    if not math.isfinite(hi - lo):  # range overflows float64: work on halved values
        scale = 0.5
    lo_s, rng = lo * scale, hi * scale - lo * scale
    if arr.ndim <= 1:
        out[...] = (np.asarray(arr, dtype=np.float64) * scale - lo_s) / rng
        return out
    for i in range(arr.shape[0]):
        out[i] = (np.asarray(arr[i], dtype=np.float64) * scale - lo_s) / rng
    return out

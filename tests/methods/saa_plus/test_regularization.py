"""Hand-computed checks of the regularisation maths (SPEC §3.2–3.7)."""
import numpy as np
import pytest
import torch

from saa.methods.saa_plus import regularization as R
from saa.methods.saa_plus.saliency_prompt import visual_saliency
from saa.saliency import cross_object_saliency, self_similarity_saliency


def test_box_score_is_max_token_probability():
    probs = torch.tensor([[0.05, 0.2, 0.1], [0.3, 0.0, 0.0]])
    assert R.box_scores(probs).tolist() == pytest.approx([0.2, 0.3])


def test_score_threshold_is_strict():
    scores = torch.tensor([0.1, 0.1000001, 0.09], dtype=torch.float32)
    # 0.1 in float32 equals the threshold converted to float32: not kept
    assert R.score_mask(scores, 0.1).tolist() == [False, True, False]


def test_area_window_is_strict_on_both_sides():
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5],   # 0.25
                          [0.5, 0.5, 0.5, 0.4],   # 0.2
                          [0.5, 0.5, 0.2, 0.5],   # 0.1
                          [0.5, 0.5, 0.0, 0.5]])  # 0
    areas = R.box_areas(boxes)
    assert areas.tolist() == pytest.approx([0.25, 0.2, 0.1, 0.0])
    assert R.area_mask(areas, 0.0, 0.25).tolist() == [False, True, True, False]
    assert R.area_mask(areas, 0.1, 1.0).tolist() == [True, True, False, False]


def test_area_reference_largest_object_box_or_one():
    assert float(R.largest_area(torch.tensor([0.1, 0.3, 0.2]))) == pytest.approx(0.3)
    assert R.largest_area(torch.zeros(0)) == 1.0
    # defect limit = object area x theta, in float32 when the object area is a tensor
    lim = R.defect_max_area(torch.tensor(0.3, dtype=torch.float32), 0.3)
    assert lim.dtype == torch.float32 and float(lim) == pytest.approx(0.09, rel=1e-6)
    assert R.defect_max_area(1.0, 0.9) == 0.9


def test_phrase_filter_is_substring_and_none_disables():
    assert R.phrase_filtered("broken bottle", "bottle")
    assert R.phrase_filtered("bottles", "bottle")  # substring, as the authors' count()>0
    assert not R.phrase_filtered("crack", "bottle")
    assert not R.phrase_filtered("bottle", None)
    assert not R.phrase_filtered("bottle", "")


def test_boxes_to_pixels():
    b = torch.tensor([[0.5, 0.25, 0.2, 0.1]])
    xyxy = R.to_pixel_xyxy(b, width=200, height=100)
    assert xyxy.tolist() == [pytest.approx([80.0, 20.0, 120.0, 30.0])]


def test_mask_area_rule():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :5] = True  # 0.5
    masks[1, :1, :3] = True  # 0.03
    fr = R.mask_area_fractions(masks)
    assert fr.tolist() == pytest.approx([0.5, 0.03, 0.0])
    assert R.mask_area_keep(fr, 0.0, 0.5).tolist() == [False, True, False]


def test_rescore_gamma_and_empty_mask():
    sal = np.zeros((4, 4), np.float32)
    sal[:2] = 0.5
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2] = True  # mean 0.5
    masks[1, 1:3] = True  # mean 0.25
    scores = np.array([0.2, 0.4, 0.3])
    out = R.rescore(scores, masks, sal, gamma=3.0)
    assert out.tolist() == pytest.approx([0.2 * np.exp(1.5), 0.4 * np.exp(0.75), 0.3])
    out1 = R.rescore(scores, masks, sal, gamma=1.0)
    assert out1.tolist() == pytest.approx([0.2 * np.exp(0.5), 0.4 * np.exp(0.25), 0.3])
    assert out.dtype == np.float64


def test_top_k_fewer_than_k_and_order():
    s = np.array([0.3, 0.1, 0.5])
    assert R.top_k(s, 5).tolist() == [1, 0, 2]
    assert R.top_k(s, 2).tolist() == [0, 2]


def test_fusion_delta_one_and_zero():
    masks = np.zeros((2, 1, 3), bool)
    masks[0, 0, :2] = True
    masks[1, 0, 1:] = True
    s = np.array([0.4, 0.8])
    m1 = R.fuse(masks, s, np.array([0, 1]), 1.0, (1, 3))
    assert m1[0].tolist() == pytest.approx([0.4 / 2, 1.2 / 3, 0.8 / 2])
    m0 = R.fuse(masks, s, np.array([0, 1]), 0.0, (1, 3))
    assert m0[0].tolist() == pytest.approx([0.4, 0.6, 0.8])
    # delta = 0: pixels under no mask are 0/0 -> 0, no NaN
    m0b = R.fuse(masks, s, np.array([0]), 0.0, (1, 3))
    assert m0b[0].tolist() == pytest.approx([0.4, 0.4, 0.0])
    assert not np.isnan(m0b).any()


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


def test_visual_saliency_falls_back_to_single_with_warning(caplog):
    calls = []

    def extractor(img, size):
        calls.append(size)
        g = torch.arange(3 * (size // 4) ** 2, dtype=torch.float32).reshape(1, 3, size // 4, size // 4)
        return torch.nn.functional.normalize(torch.sin(g), dim=1)

    img = np.zeros((40, 60, 3), np.uint8)
    one = np.zeros((1, 40, 60), bool)
    one[0, 5:20, 5:20] = True
    with caplog.at_level("WARNING"):
        res = visual_saliency(img, one, n_objects=4, extractor=extractor, n=5, single_size=32, multi_size=64)
    assert res.branch == "single" and "fell back" in res.note
    assert res.map.shape == (40, 60)
    assert calls == [32]  # no wasted multi-object feature pass
    assert any("fell back" in r.message for r in caplog.records)


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

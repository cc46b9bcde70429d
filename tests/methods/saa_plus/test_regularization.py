"""Hand-computed checks of the regularisation maths (SPEC §3.2–3.7)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from saa.methods.saa_plus import regularization as R


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

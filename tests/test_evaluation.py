"""The arithmetic of an evaluation (saa.evaluation): one joint normalisation per category (constant
maps and float noise zeroed), nearest-neighbour mask resizing, means and tables, the ``eval_size``
option, the reasons a metric cannot be computed."""
from __future__ import annotations

import csv
import io

import cv2
import numpy as np
import pytest

from saa.config import load_config
from saa.errors import ConfigError
from saa.evaluation import (METRIC_KEYS, category_maps_and_scale, eval_size_of, format_table, mean_metrics,
                            resize_masks, split_dataset_options)

from tests.conftest import REPO


def test_category_maps_joint_normalisation():
    """category_maps_and_scale (the one entry point left of the old evaluation_maps / category_maps):
    joint normalisation over the category, constant maps zeroed, bicubic resize first."""
    a = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    b = np.array([[1.0, 1.0], [1.0, 2.0]], np.float32)
    maps, scores, _, _ = category_maps_and_scale([a, b], 2)  # no resize: exact
    np.testing.assert_allclose(maps[0], a / 4.0)
    np.testing.assert_allclose(maps[1], b / 4.0)
    np.testing.assert_allclose(scores, [1.0, 0.5])
    # constant maps (max == min): all zeros, no NaN
    maps, scores, _, _ = category_maps_and_scale([np.full((3, 3), 0.7, np.float32)] * 2, 3)
    assert not maps.any() and np.array_equal(scores, [0.0, 0.0])
    # resized maps: bicubic first, then normalised: the category stays within [0, 1], max exactly 1
    rng = np.random.default_rng(0)
    raw = [rng.random((8, 8)).astype(np.float32) * 3 for _ in range(3)]
    maps, scores, _, _ = category_maps_and_scale(raw, 20)
    assert maps.shape == (3, 20, 20) and maps.dtype == np.float32
    assert maps.min() == 0.0 and maps.max() == 1.0
    np.testing.assert_array_equal(scores, maps.reshape(3, -1).max(1))
    up = cv2.resize(raw[0], (20, 20), interpolation=cv2.INTER_CUBIC)
    assert np.corrcoef(up.ravel(), maps[0].ravel())[0, 1] > 0.9999


def test_resize_masks_nearest():
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    out = resize_masks([m, m.astype(np.uint8) * 255], 8)
    assert out.dtype == bool and out.shape == (2, 8, 8)
    assert out[0, :4, :4].all() and not out[0, 4:, :].any() and not out[0, :, 4:].any()
    assert np.array_equal(out[0], out[1])


def test_mean_and_tables():
    per = {"a": {k: 50.0 for k in METRIC_KEYS}, "b": {k: None for k in METRIC_KEYS}}
    per["b"]["image_auroc"] = 70.0
    mean = mean_metrics(per)
    assert mean["image_auroc"] == 60.0 and mean["pixel_ap"] == 50.0
    assert mean_metrics({"a": {k: None for k in METRIC_KEYS}})["aupro"] is None
    result = {"categories": {c: {"metrics": v, "counts": {"images": 3}} for c, v in per.items()}, "mean": mean}
    rows = list(csv.reader(io.StringIO(format_table(result, "csv"))))
    assert rows[0] == ["category", "images", *METRIC_KEYS]
    assert rows[1][:3] == ["a", "3", "50.00"] and rows[2][2:4] == ["70.00", "n/a"]
    assert rows[3][:4] == ["mean", "6", "60.00", "50.00"]
    text = format_table(result, "text")
    assert "n/a" in text and text.splitlines()[-1].startswith("mean")
    assert format_table(result, "md").splitlines()[-1].startswith("| **mean** |")


def test_eval_size_option():
    base = REPO / "configs" / "mvtec.yaml"
    assert eval_size_of(load_config(base)) == 400
    assert eval_size_of(load_config(base, ["dataset.options.eval_size=256"])) == 256
    for bad in ("full", "0", "2.5", "true"):
        with pytest.raises(ConfigError, match="eval_size"):
            eval_size_of(load_config(base, [f"dataset.options.eval_size={bad}"]))
    assert split_dataset_options({"eval_size": 3, "split": "train"}) == ({"split": "train"}, {"eval_size": 3})


def test_unavailable_metrics_reasons():
    from saa.evaluation import unavailable_metrics

    assert unavailable_metrics(3, 2, True, True) == {}
    assert set(unavailable_metrics(3, 2, False)) == {"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro",
                                                     "region_f1_max"}
    assert "mark no defect pixel" in unavailable_metrics(3, 2, True, False)["aupro"]
    assert list(unavailable_metrics(0, 2, True, True)) == ["image_auroc"]
    assert len(unavailable_metrics(4, 0, True, False)) == 8


def test_category_maps_keeps_real_contrast_and_zeroes_noise():
    rng = np.random.default_rng(0)
    noise = [1e-7 * rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3)]
    maps, scores, note, norm = category_maps_and_scale(noise, 8)
    assert note and not maps.any() and not scores.any()
    assert norm.constant  # and the recorded scale says so
    real = [np.zeros((8, 8), np.float32), np.full((8, 8), 0.01, np.float32)]
    maps, scores, note, norm = category_maps_and_scale(real, 8)
    assert note is None and scores.tolist() == [0.0, 1.0]
    assert not norm.constant

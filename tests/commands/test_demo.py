"""``saa demo`` (saa.commands.demo): the bundled samples with lite, every registered method and the
README's aliases offered, one colour scale per category."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from saa.cli import main
from saa.methods import Method, register_method, unregister_method
from saa.prediction import Prediction


def test_demo_draws_a_category_on_one_scale(tmp_path, monkeypatch):
    """`saa demo` (lite): the images of one category share one colour scale (the joint range of
    their maps), each panel with a colour bar."""
    import saa.visualize as vis

    seen = []
    real = vis.prediction_panels

    def spy(*a, **k):
        seen.append(k.get("scale"))
        return real(*a, **k)

    monkeypatch.setattr(vis, "prediction_panels", spy)
    assert main(["-q", "demo", "--out", str(tmp_path / "demo"), "--set", f"models.weights_dir={tmp_path / 'none'}"]) == 0
    maps = {p.stem: np.load(p) for p in (tmp_path / "demo").glob("*.npy")}
    hazel = [m for s, m in maps.items() if s.startswith("hazelnut")]
    assert len(seen) == len(maps) == 4
    scales = set(seen)
    assert len(scales) == 2  # one per category
    want = (min(float(m.min()) for m in hazel), max(float(m.max()) for m in hazel))
    assert any((s.vmin, s.vmax) == pytest.approx(want) for s in scales)


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
    # no thresholds given: the page says where verdicts come from, the good-parts path included
    assert "no verdict" in html and "saa bank calibrate" in html and "--thresholds-from" in html
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

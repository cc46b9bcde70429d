"""The per-category run loop (saa.run.engine) with any method: two toy plug-ins
(tests/support/toy_methods.py) and lite run through `saa run` and `saa predict`; pass 1 and the
reference bank; a map is recomputed exactly when what it depends on changes (the image, the set of
images, out_size), and a run interrupted mid-category resumes per image; keys that used to share a
stored file get their own.

Runs on real MVTec bottle images (small), with lite mode (real EfficientNet-Lite0 features) and
the toy methods; no Grounding DINO or SAM file is needed.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from saa.cli import main
from saa.config import load_config
from saa.run import evaluate_run

from tests.conftest import BOTTLE, REPO
from toy_methods import Brightness


MVTEC = REPO / "configs" / "mvtec.yaml"


def test_toy_methods_through_saa_run_and_saa_predict(tmp_path, toy_methods, capsys, make_mvtec, no_weights,
                                                     stored_maps):
    data = make_mvtec(tmp_path / "data")
    out = tmp_path / "run"
    sets = [a for s in no_weights(tmp_path) for a in ("--set", s)]
    argv = ["-q", "run", str(MVTEC), "--data-root", str(data), "--out", str(out), "--no-progress",
            "--method", "toy_brightness"] + sets
    Brightness.calls = 0
    assert main(argv) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["method"] == "toy_brightness" and first["method_label"] == "toy brightness method"
    assert first["totals"] == {"images": 3, "computed": 3, "reused": 0} and Brightness.calls == 3
    assert "toy brightness method" in capsys.readouterr().out
    assert (out / "metrics.md").read_text().startswith("# toy brightness method on mvtec")
    assert "method: toy_brightness" in (out / "config.yaml").read_text()
    assert "toy brightness method" in (out / "report.html").read_text()
    assert main(argv) == 0  # resumed: nothing computed
    assert json.loads((out / "metrics.json").read_text())["totals"]["computed"] == 0 and Brightness.calls == 3

    # a method with references: pass 1, the bank, per-image maps, the features removed at the end
    ref_out = tmp_path / "refs"
    assert main(["-q", "run", str(MVTEC), "--data-root", str(data), "--out", str(ref_out), "--no-progress",
                 "--method", "toy_colour_refs"] + sets) == 0
    got = json.loads((ref_out / "metrics.json").read_text())
    assert got["totals"]["computed"] == 3 and got["categories"]["bottle"]["features_computed"] == 3
    assert not (ref_out / "bottle" / "cross_features").exists()
    maps = stored_maps(ref_out)
    assert len(maps) == 3 and all(m["map"].max() > 0 for m in maps.values())  # scored against the others

    imgs = sorted(str(p) for p in (data / "bottle" / "test").glob("*/*.png"))
    pred_out = tmp_path / "pred"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--out", str(pred_out),
                 "--method", "toy_colour_refs", *imgs] + [a for s in no_weights(tmp_path) for a in ("--set", s)]) == 0
    infos = [json.loads(p.read_text()) for p in sorted(pred_out.glob("*.json"))]
    assert len(infos) == 3 and {i["method"] for i in infos} == {"toy_colour_refs"}
    assert len(list(pred_out.glob("*_panels.png"))) == 3


# ---------------------------------------------------------------------------------------------
# what a map depends on


def test_adding_images_recomputes_the_maps_that_depend_on_the_set_and_only_those(tmp_path, toy_methods, make_mvtec,
                                                                                 no_weights, put_image, put_mask,
                                                                                 stored_maps):
    data = make_mvtec(tmp_path / "data")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    lite_out, toy_out = tmp_path / "lite", tmp_path / "toy"
    evaluate_run(cfg, lite_out, data_root=data, progress=False, print_table=False, method="lite")
    evaluate_run(cfg, toy_out, data_root=data, progress=False, print_table=False, method="toy_brightness")
    # one more image in the category
    put_image(BOTTLE / "test" / "broken_small" / "000.png", data / "bottle" / "test" / "broken_small" / "000.png")
    put_mask(BOTTLE / "ground_truth" / "broken_small" / "000_mask.png",
              data / "bottle" / "ground_truth" / "broken_small" / "000_mask.png")
    toy = evaluate_run(cfg, toy_out, data_root=data, progress=False, print_table=False, method="toy_brightness")
    assert (toy["totals"]["computed"], toy["totals"]["reused"]) == (1, 3)  # maps that do not depend on the set
    lite = evaluate_run(cfg, lite_out, data_root=data, progress=False, print_table=False, method="lite")
    assert (lite["totals"]["computed"], lite["totals"]["reused"]) == (4, 0)  # every lite map depends on the set
    fresh = evaluate_run(cfg, tmp_path / "fresh", data_root=data, progress=False, print_table=False,
                           method="lite")
    assert lite["categories"]["bottle"]["metrics"] == fresh["categories"]["bottle"]["metrics"]
    a, b = stored_maps(lite_out), stored_maps(tmp_path / "fresh")
    assert a.keys() == b.keys() and all(np.array_equal(a[k]["map"], b[k]["map"]) for k in a)

    # an image replaced under the same name: its map is recomputed (and, for lite, every map)
    target = data / "bottle" / "test" / "good" / "000.png"
    put_image(BOTTLE / "test" / "good" / "002.png", target)
    os.utime(target, ns=(1, 1))
    toy = evaluate_run(cfg, toy_out, data_root=data, progress=False, print_table=False, method="toy_brightness")
    assert toy["totals"]["computed"] == 1
    lite = evaluate_run(cfg, lite_out, data_root=data, progress=False, print_table=False, method="lite")
    assert lite["totals"]["computed"] == 4


def test_no_silent_fallback_to_another_method(tmp_path, make_mvtec, no_weights, stored_maps):
    """A stored lite map that is invalid at evaluation time is recomputed by lite (the full
    pipeline's model files do not exist here: any fallback to it would fail)."""
    data = make_mvtec(tmp_path / "data")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    out = tmp_path / "run"
    evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    maps = sorted((out / "bottle" / "maps").glob("*.npz"))
    maps[0].write_bytes(maps[0].read_bytes()[:100])  # truncated
    maps[1].with_suffix(".json").unlink()  # sidecar gone
    again = evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    assert (again["totals"]["computed"], again["totals"]["reused"]) == (2, 1)
    assert all(v["fingerprint"].startswith("lite-") for v in stored_maps(out).values())
    # another out_size into the same folder: lite again, every map recomputed at the new size
    other = load_config(MVTEC, no_weights(tmp_path) + ["out_size=256"])
    third = evaluate_run(other, out, data_root=data, progress=False, print_table=False, method="lite")
    assert third["method"] == "lite" and third["totals"]["computed"] == 3
    assert {v["map"].shape for v in stored_maps(out).values()} == {(256, 256)}


def test_lite_resumes_per_image_after_an_interruption(tmp_path, monkeypatch, make_mvtec, no_weights, stored_maps):
    from saa.methods.lite import LiteMethod

    data = make_mvtec(tmp_path / "data")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    out = tmp_path / "run"
    real = LiteMethod.predict
    calls = {"n": 0}

    def stop_at_second(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(LiteMethod, "predict", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    monkeypatch.setattr(LiteMethod, "predict", real)
    assert len(list((out / "bottle" / "maps").glob("*.npz"))) == 1
    assert len(list((out / "bottle" / "cross_features").glob("*.npz"))) == 3  # pass 1 was complete
    resumed = evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    info = resumed["categories"]["bottle"]
    assert (info["computed"], info["reused"], info["features_computed"]) == (2, 1, 0)
    assert not (out / "bottle" / "cross_features").exists()
    fresh = evaluate_run(cfg, tmp_path / "fresh", data_root=data, progress=False, print_table=False,
                           method="lite")
    a, b = stored_maps(out), stored_maps(tmp_path / "fresh")
    assert all(np.array_equal(a[k]["map"], b[k]["map"]) for k in a)
    assert info["metrics"] == fresh["categories"]["bottle"]["metrics"]


# ---------------------------------------------------------------------------------------------
# one stored result per image, nothing outside --out


def test_keys_that_used_to_share_a_file_get_their_own(tmp_path, no_weights, put_image, put_mask, stored_maps):
    """good/crack__x.png (normal) and good__crack/x.png (defective) were both stored as
    good__crack__x.npz: the normal image got the defective image's map."""
    root = tmp_path / "data"
    t = root / "bottle" / "test"
    put_image(BOTTLE / "test" / "good" / "000.png", t / "good" / "crack__x.png")
    put_image(BOTTLE / "test" / "good" / "002.png", t / "good" / "002.png")
    put_image(BOTTLE / "test" / "broken_large" / "000.png", t / "good__crack" / "x.png")
    put_mask(BOTTLE / "ground_truth" / "broken_large" / "000_mask.png",
              root / "bottle" / "ground_truth" / "good__crack" / "x_mask.png")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    out = tmp_path / "run"
    r = evaluate_run(cfg, out, data_root=root, progress=False, print_table=False, method="lite")
    stored = stored_maps(out)
    assert set(stored) == {"good/crack__x", "good/002", "good__crack/x"}
    assert len({v["file"] for v in stored.values()}) == 3
    assert not np.array_equal(stored["good/crack__x"]["map"], stored["good__crack/x"]["map"])
    assert r["categories"]["bottle"]["metrics"]["image_auroc"] == 100.0
    rows = (out / "bottle" / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == 3

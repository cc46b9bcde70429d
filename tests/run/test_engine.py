"""Methods as plug-ins (saa.methods) through the one runner (saa.run) and the results store
(saa.results): a method registered here, in the test file, runs through `saa run` and
`saa predict`; every method is named where users read it; counts, resume, reference sets,
torchrun, injective names and containment hold for every method.

Runs on real MVTec bottle images (small), with lite mode (real EfficientNet-Lite0 features) and
two toy methods defined below; no Grounding DINO or SAM file is needed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from saa import evaluator as E
from saa.cli import main
from saa.config import config_from_dict, load_config
from saa.errors import SaaError
from saa.methods import Method, available_methods, get_method, register_method, unregister_method
from saa.methods.base import hash_of, reference_set_id
from saa.naming import stored_stem
from saa.prediction import Prediction
from saa.results import ResultStore

from test_evaluator import BOTTLE, _put_image, _put_mask, make_mvtec

REPO = Path(__file__).resolve().parents[1]
MVTEC = REPO / "configs" / "mvtec.yaml"


# ---------------------------------------------------------------------------------------------
# two toy methods, registered from this file only


class Brightness(Method):
    """Distance of each pixel's grey level from the image's median; no references."""

    name = "toy_brightness"
    panels = ("image", "anomaly_map")
    calls = 0

    @property
    def label(self) -> str:
        return "toy brightness method"

    def fingerprint(self, category, references=None):
        return "toy-b-" + hash_of({"out": self.config.out_size})

    def predict(self, rgb, category, *, bank=None, index=None):
        type(self).calls += 1
        grey = rgb.mean(axis=2).astype(np.float32) / 255.0
        full = np.abs(grey - np.median(grey)).astype(np.float32)
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          method=self.name, method_label=self.label, has_regions=False)


class ColourReferences(Method):
    """Each 8 x 8 colour cell against the other images' cells (the generic reference bank)."""

    name = "toy_colour_refs"
    panels = ("image", "anomaly_map")

    @property
    def needs_references(self) -> bool:
        return True

    def fingerprint(self, category, references=None):
        data = {"toy": "colour", "out": self.config.out_size}
        if references is not None:
            data["refs"] = reference_set_id(references)
        return hash_of(data)

    def reference_features(self, rgb):
        small = torch.from_numpy(cv2.resize(rgb, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32))
        return torch.nn.functional.normalize(small.permute(2, 0, 1) + 1.0, dim=0)

    def bank_settings(self):
        return {"k": 1}

    def predict(self, rgb, category, *, bank=None, index=None):
        grid = None
        if bank is not None:
            grid = bank.scores(index) if index is not None else bank.scores_for(self.reference_features(rgb))
        if grid is None:
            grid = np.zeros((8, 8), np.float32)
        full = cv2.resize(grid, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          method=self.name, method_label="toy colour references", has_regions=False)


@pytest.fixture
def toys():
    register_method(Brightness)
    register_method(ColourReferences)
    try:
        yield
    finally:
        unregister_method(Brightness.name)
        unregister_method(ColourReferences.name)


def no_weights(tmp_path: Path) -> list[str]:
    return [f"models.weights_dir={tmp_path / 'no_weights'}", "general_prompts=[]"]


def _npz(out: Path, cat: str = "bottle") -> dict[str, dict]:
    res = {}
    for p in sorted((out / cat / "maps").glob("*.npz")):
        with np.load(p) as z:
            res[str(z["key"])] = {"map": z["map"].copy(), "fingerprint": str(z["fingerprint"]), "file": p.name}
    return res


# ---------------------------------------------------------------------------------------------
# plug-ins


def test_registry_finds_by_name_and_says_what_exists(toys):
    assert {"saa", "lite", "toy_brightness"} <= set(available_methods())
    assert get_method("full") is get_method("saa")  # the old name keeps working
    with pytest.raises(SaaError, match=r"unknown method 'toy_brightnes'.*did you mean 'toy_brightness'"):
        get_method("toy_brightnes")
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Other", (Brightness,), {}), name="toy_brightness")


def test_toy_methods_through_saa_run_and_saa_predict(tmp_path, toys, capsys):
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
    maps = _npz(ref_out)
    assert len(maps) == 3 and all(m["map"].max() > 0 for m in maps.values())  # scored against the others

    imgs = sorted(str(p) for p in (data / "bottle" / "test").glob("*/*.png"))
    pred_out = tmp_path / "pred"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--out", str(pred_out),
                 "--method", "toy_colour_refs", *imgs] + [a for s in no_weights(tmp_path) for a in ("--set", s)]) == 0
    infos = [json.loads(p.read_text()) for p in sorted(pred_out.glob("*.json"))]
    assert len(infos) == 3 and {i["method"] for i in infos} == {"toy_colour_refs"}
    assert len(list(pred_out.glob("*_panels.png"))) == 3


# ---------------------------------------------------------------------------------------------
# the method is named where users read it, and config.yaml reproduces the run


def test_lite_run_is_named_everywhere_and_its_reproduce_line_reruns_it(tmp_path, capsys):
    data = make_mvtec(tmp_path / "data")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    out = tmp_path / "run"
    first = E.evaluate_run(cfg, out, data_root=data, progress=False, method="lite")
    printed = capsys.readouterr().out
    header = printed.splitlines()[0]
    assert header.startswith("lite (ours") and "SAA+" not in header and "preset" not in header, header
    md = (out / "metrics.md").read_text()
    assert md.startswith("# lite (ours") and "SAA+" not in md.splitlines()[0] and "preset official" not in md
    html = (out / "report.html").read_text()
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert "lite" in title and "SAA+" not in title, title
    assert "preset <b>official" not in html and "Method settings" in html
    assert first["method"] == "lite" and first["preset"] is None
    text = (out / "config.yaml").read_text()
    assert re.search(r"^method: lite$", text, re.M), text[:500]
    cmd = re.search(r"Reproduce: (saa run .*)", text).group(1)
    # the Reproduce line as a user would run it: the lite run again, every map reused
    args = shlex.split(cmd)
    assert args[:2] == ["saa", "run"]
    assert main(["-q", *args[1:], "--no-progress"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["method"] == "lite" and again["totals"]["computed"] == 0 and again["totals"]["reused"] == 3
    assert again["categories"]["bottle"]["metrics"] == first["categories"]["bottle"]["metrics"]


# ---------------------------------------------------------------------------------------------
# what a map depends on


def test_adding_images_recomputes_the_maps_that_depend_on_the_set_and_only_those(tmp_path, toys):
    data = make_mvtec(tmp_path / "data")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    lite_out, toy_out = tmp_path / "lite", tmp_path / "toy"
    E.evaluate_run(cfg, lite_out, data_root=data, progress=False, print_table=False, method="lite")
    E.evaluate_run(cfg, toy_out, data_root=data, progress=False, print_table=False, method="toy_brightness")
    # one more image in the category
    _put_image(BOTTLE / "test" / "broken_small" / "000.png", data / "bottle" / "test" / "broken_small" / "000.png")
    _put_mask(BOTTLE / "ground_truth" / "broken_small" / "000_mask.png",
              data / "bottle" / "ground_truth" / "broken_small" / "000_mask.png")
    toy = E.evaluate_run(cfg, toy_out, data_root=data, progress=False, print_table=False, method="toy_brightness")
    assert (toy["totals"]["computed"], toy["totals"]["reused"]) == (1, 3)  # maps that do not depend on the set
    lite = E.evaluate_run(cfg, lite_out, data_root=data, progress=False, print_table=False, method="lite")
    assert (lite["totals"]["computed"], lite["totals"]["reused"]) == (4, 0)  # every lite map depends on the set
    fresh = E.evaluate_run(cfg, tmp_path / "fresh", data_root=data, progress=False, print_table=False,
                           method="lite")
    assert lite["categories"]["bottle"]["metrics"] == fresh["categories"]["bottle"]["metrics"]
    a, b = _npz(lite_out), _npz(tmp_path / "fresh")
    assert a.keys() == b.keys() and all(np.array_equal(a[k]["map"], b[k]["map"]) for k in a)

    # an image replaced under the same name: its map is recomputed (and, for lite, every map)
    target = data / "bottle" / "test" / "good" / "000.png"
    _put_image(BOTTLE / "test" / "good" / "002.png", target)
    os.utime(target, ns=(1, 1))
    toy = E.evaluate_run(cfg, toy_out, data_root=data, progress=False, print_table=False, method="toy_brightness")
    assert toy["totals"]["computed"] == 1
    lite = E.evaluate_run(cfg, lite_out, data_root=data, progress=False, print_table=False, method="lite")
    assert lite["totals"]["computed"] == 4


def test_no_silent_fallback_to_another_method(tmp_path):
    """A stored lite map that is invalid at evaluation time is recomputed by lite (the full
    pipeline's model files do not exist here: any fallback to it would fail)."""
    data = make_mvtec(tmp_path / "data")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    out = tmp_path / "run"
    E.evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    maps = sorted((out / "bottle" / "maps").glob("*.npz"))
    maps[0].write_bytes(maps[0].read_bytes()[:100])  # truncated
    maps[1].with_suffix(".json").unlink()  # sidecar gone
    again = E.evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    assert (again["totals"]["computed"], again["totals"]["reused"]) == (2, 1)
    assert all(v["fingerprint"].startswith("lite-") for v in _npz(out).values())
    # another out_size into the same folder: lite again, every map recomputed at the new size
    other = load_config(MVTEC, no_weights(tmp_path) + ["out_size=256"])
    third = E.evaluate_run(other, out, data_root=data, progress=False, print_table=False, method="lite")
    assert third["method"] == "lite" and third["totals"]["computed"] == 3
    assert {v["map"].shape for v in _npz(out).values()} == {(256, 256)}


def test_lite_resumes_per_image_after_an_interruption(tmp_path, monkeypatch):
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
        E.evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    monkeypatch.setattr(LiteMethod, "predict", real)
    assert len(list((out / "bottle" / "maps").glob("*.npz"))) == 1
    assert len(list((out / "bottle" / "cross_features").glob("*.npz"))) == 3  # pass 1 was complete
    resumed = E.evaluate_run(cfg, out, data_root=data, progress=False, print_table=False, method="lite")
    info = resumed["categories"]["bottle"]
    assert (info["computed"], info["reused"], info["features_computed"]) == (2, 1, 0)
    assert not (out / "bottle" / "cross_features").exists()
    fresh = E.evaluate_run(cfg, tmp_path / "fresh", data_root=data, progress=False, print_table=False,
                           method="lite")
    a, b = _npz(out), _npz(tmp_path / "fresh")
    assert all(np.array_equal(a[k]["map"], b[k]["map"]) for k in a)
    assert info["metrics"] == fresh["categories"]["bottle"]["metrics"]


# ---------------------------------------------------------------------------------------------
# one stored result per image, nothing outside --out


def test_keys_that_used_to_share_a_file_get_their_own(tmp_path):
    """good/crack__x.png (normal) and good__crack/x.png (defective) were both stored as
    good__crack__x.npz: the normal image got the defective image's map."""
    root = tmp_path / "data"
    t = root / "bottle" / "test"
    _put_image(BOTTLE / "test" / "good" / "000.png", t / "good" / "crack__x.png")
    _put_image(BOTTLE / "test" / "good" / "002.png", t / "good" / "002.png")
    _put_image(BOTTLE / "test" / "broken_large" / "000.png", t / "good__crack" / "x.png")
    _put_mask(BOTTLE / "ground_truth" / "broken_large" / "000_mask.png",
              root / "bottle" / "ground_truth" / "good__crack" / "x_mask.png")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    out = tmp_path / "run"
    r = E.evaluate_run(cfg, out, data_root=root, progress=False, print_table=False, method="lite")
    stored = _npz(out)
    assert set(stored) == {"good/crack__x", "good/002", "good__crack/x"}
    assert len({v["file"] for v in stored.values()}) == 3
    assert not np.array_equal(stored["good/crack__x"]["map"], stored["good__crack/x"]["map"])
    assert r["categories"]["bottle"]["metrics"]["image_auroc"] == 100.0
    rows = (out / "bottle" / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="a_/~.-Z", min_size=1, max_size=12), min_size=2, max_size=8, unique=True))
def test_stored_stems_are_injective_and_plain(keys):
    stems = [stored_stem(k) for k in keys]
    assert len(set(stems)) == len(stems), dict(zip(keys, stems))
    assert all("/" not in s and s not in (".", "..") and s for s in stems)


def test_long_key_gets_a_short_unique_name():
    a, b = "d/" + "x" * 300, "d/" + "x" * 299 + "y"
    assert stored_stem(a) != stored_stem(b) and len(stored_stem(a).encode()) <= 180


@pytest.mark.parametrize("name", ["..", "../../x", "/tmp/saa_abs_category", "a/b", "."])
def test_a_category_that_is_not_a_plain_name_writes_nothing_outside_out(tmp_path, name):
    data = tmp_path / "data" / "parts"
    _put_image(BOTTLE / "test" / "good" / "000.png", data / "good" / "a.png")
    _put_image(BOTTLE / "test" / "broken_large" / "000.png", data / "bad" / "b.png")
    out = tmp_path / "work" / "run"
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(SaaError, match="plain"):
        cfg = config_from_dict({
            "categories": {name: {"object": "bottle", "n_objects": 1, "k_mask": 3, "area_ratio": 0.3,
                                  "prompts": [["crack", "bottle"]]}},
            "models": {"weights_dir": str(tmp_path / "none")},
            "dataset": {"kind": "folder", "root": str(data),
                        "options": {"normal_dir": "good", "defect_dirs": ["bad"], "category": name}},
        })
        E.evaluate_run(cfg, out, progress=False, print_table=False, method="lite")
    after = {p for p in tmp_path.rglob("*")}
    assert after - before <= {tmp_path / "work", out}, sorted(map(str, after - before))
    assert not Path("/tmp/saa_abs_category").exists()
    with pytest.raises(SaaError, match="outside"):
        ResultStore(out).path("..", "elsewhere.txt")


# ---------------------------------------------------------------------------------------------
# saa predict with lite: panels, and panels the method cannot draw


def test_predict_lite_writes_panels_and_refuses_panels_it_cannot_draw(tmp_path):
    data = make_mvtec(tmp_path / "data")
    imgs = sorted(str(p) for p in (data / "bottle" / "test").glob("*/*.png"))
    base = ["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "lite"]
    base += [a for s in no_weights(tmp_path) for a in ("--set", s)]
    out = tmp_path / "out"
    assert main(base + ["--out", str(out), *imgs]) == 0
    assert len(list(out.glob("*_panels.png"))) == len(imgs)
    info = json.loads(sorted(out.glob("*.json"))[0].read_text())
    assert info["method"] == "lite" and "candidates" not in info and info["saliency_branch"] == "cross"
    assert main(base + ["--out", str(tmp_path / "all"), "--panels", "all", *imgs]) == 0
    assert main(base + ["--out", str(tmp_path / "boxes"), "--panels", "boxes", *imgs]) == 1
    assert not (tmp_path / "boxes").exists()  # refused before anything was written


# ---------------------------------------------------------------------------------------------
# both reference rules for both methods


def test_both_reference_rules_are_offered_to_both_methods():
    from saa.methods.lite import LiteMethod
    from saa.methods.saa_plus import SaaMethod
    from saa.saliency.bank import CrossImageBank
    from saa.saliency.cross import cross_image_scores

    g = torch.Generator().manual_seed(4)
    feats = [torch.nn.functional.normalize(torch.randn(12, 5, 6, generator=g), dim=0) for _ in range(6)]
    per_image = load_config(MVTEC, ["preset=improved", "behaviour.cross_image_aggregate=per_image",
                                    "behaviour.cross_image_max_others=4"])
    settings = SaaMethod(per_image).bank_settings()
    assert (settings["aggregate"], settings["fraction"], settings["max_others"]) == ("per_image", 0.5, 4)
    bank = CrossImageBank.from_features(feats, **settings)
    want = cross_image_scores(feats, k=1, max_others=4, subset="similar", aggregate="per_image", fraction=0.5)
    for i in range(6):
        np.testing.assert_array_equal(bank.scores(i), want[i])
    assert E.config_fingerprint(per_image, "bottle") != E.config_fingerprint(load_config(MVTEC, ["preset=improved",
                                                                             "behaviour.cross_image_max_others=4"]),
                                                                             "bottle")
    lite = LiteMethod(per_image, aggregate="nearest", max_others=None)
    s = lite.bank_settings()
    assert (s["aggregate"], s["max_others"]) == ("nearest", None)
    bank = CrossImageBank.from_features(feats, **s)
    want = cross_image_scores(feats, k=1, aggregate="nearest")
    for i in range(6):
        np.testing.assert_array_equal(bank.scores(i), want[i])
    assert lite.fingerprint("bottle") != LiteMethod(per_image).fingerprint("bottle")

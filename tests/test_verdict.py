"""Thresholds and verdicts (saa.verdict, issue #15): a labelled run records the F1-optimal thresholds on
its normalised scale; scores.csv gets verdicts, --save-masks the predicted masks; `saa predict
--thresholds-from RUN` puts new maps on the run's scale and gives the same verdicts (refused when they
do not match, or when the run is weak or unlabelled); `saa predict` takes folders and globs.

Real MVTec bottle images (small) with lite mode (real EfficientNet-Lite0 features) and a toy method
defined here; no Grounding DINO or SAM file is needed."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa import visualize as V
from saa.cli import main
from saa.evaluation import Normalisation, category_evaluation, category_maps_and_scale
from saa.methods import Method, register_method, unregister_method
from saa.methods.base import hash_of
from saa.naming import stored_stem
from saa.prediction import Prediction
from saa.verdict import load_decision, predicted_mask

from tests.conftest import BOTTLE, REPO


MVTEC = REPO / "configs" / "mvtec.yaml"


KEYS = ("broken_large/000", "broken_small/000", "contamination/000", "good/000", "good/002")


def make_bottles(root: Path, put_image, put_mask) -> Path:
    for key in KEYS:
        put_image(BOTTLE / "test" / f"{key}.png", root / "bottle" / "test" / f"{key}.png")
        if not key.startswith("good"):
            put_mask(BOTTLE / "ground_truth" / f"{key}_mask.png", root / "bottle" / "ground_truth" / f"{key}_mask.png")
    return root


def sets(tmp_path: Path) -> list[str]:
    return ["--set", f"models.weights_dir={tmp_path / 'no_weights'}"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class Grey(Method):
    """Distance of each pixel's grey level from the image's median; no references."""

    name = "toy_grey"
    panels = ("image", "anomaly_map")

    def fingerprint(self, category, references=None):
        return "toy-grey-" + hash_of({"out": self.config.out_size})

    def predict(self, rgb, category, *, bank=None, index=None):
        grey = rgb.mean(axis=2).astype(np.float32) / 255.0
        full = np.abs(grey - np.median(grey)).astype(np.float32)
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          method=self.name, method_label="toy grey", has_regions=False)


@pytest.fixture
def grey():
    register_method(Grey)
    try:
        yield
    finally:
        unregister_method(Grey.name)


# ---------------------------------------------------------------------------------------------
# the maths


@pytest.mark.parametrize("seed", range(6))
def test_f1_at_the_recorded_threshold_is_the_reported_f1_max(seed):
    rng = np.random.default_rng(seed)
    n, side = 7, 24
    masks = np.zeros((n, side, side), bool)
    for i in range(1, n, 2):  # odd images defective, a blob each
        y, x = rng.integers(2, side - 8, 2)
        masks[i, y:y + rng.integers(2, 7), x:x + rng.integers(2, 7)] = True
    raw = rng.random((n, side, side)).astype(np.float32) * 0.5 + masks * rng.uniform(0.1, 0.8)
    raw = np.round(raw * 20) / 20  # ties, as real maps have
    maps, scores, note, norm = category_maps_and_scale(raw, side)
    labels = masks.any(axis=(1, 2)).astype(int)
    metrics, thr = category_evaluation(labels, scores, masks, maps)
    assert note is None and thr["image_threshold"] is not None and thr["pixel_threshold"] is not None

    def f1_at(pos, s, t):
        pred = s >= t
        tp = int(np.sum(pred & pos))
        return 2.0 * tp / (tp + int(np.sum(pred & ~pos)) + int(np.sum(pos)))

    pos_img = labels.astype(bool)
    assert 100.0 * f1_at(pos_img, scores, thr["image_threshold"]) == metrics["image_f1_max"]
    assert 100.0 * f1_at(masks.ravel(), maps.ravel(), thr["pixel_threshold"]) == metrics["pixel_f1_max"]
    # no other threshold does better (F1-max is a maximum over every distinct score)
    assert all(f1_at(pos_img, scores, t) <= f1_at(pos_img, scores, thr["image_threshold"]) for t in np.unique(scores))
    # the recorded normalisation puts the same maps on bit for bit the same scale
    again, again_scores = Normalisation.from_dict(json.loads(json.dumps(norm.to_dict()))).apply(raw)
    assert np.array_equal(again, maps) and np.array_equal(again_scores, scores)
    # a new map above the category's range scores above 1 (not clipped: higher than anything seen)
    hot, hot_score = norm.apply([raw[0] + 2 * (norm.hi - norm.lo)])
    assert hot_score[0] > 1.0


# ---------------------------------------------------------------------------------------------
# a labelled run, then saa predict with its thresholds


def test_labelled_run_records_thresholds_and_predict_gives_its_verdicts(tmp_path, capsys, put_image, put_mask):
    data = make_bottles(tmp_path / "data", put_image, put_mask)
    run = tmp_path / "run"
    assert main(["-q", "run", str(MVTEC), "--data-root", str(data), "--out", str(run), "--no-progress",
                 "--method", "lite", "--save-masks"] + sets(tmp_path)) == 0
    result = json.loads((run / "metrics.json").read_text())
    info = result["categories"]["bottle"]
    dec = info["decision"]
    assert dec["method"] == "lite" and dec["out_size"] == 400 and dec["fingerprint"].startswith("lite-")
    assert dec["normalisation"]["eval_size"] == 400 and dec["normalisation"]["hi"] > dec["normalisation"]["lo"]
    rows = read_csv(run / "bottle" / "scores.csv")
    assert [r["key"] for r in rows] == sorted(KEYS)
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["image_score"]) for r in rows])
    # the verdict column is "score >= image threshold", and F1 there is the reported I-F1max
    t = dec["image_threshold"]
    assert [r["verdict"] for r in rows] == ["DEFECT" if s >= t else "OK" for s in scores]
    pred = scores >= t
    tp = int(np.sum(pred & (labels == 1)))
    assert 100.0 * 2 * tp / (tp + int(np.sum(pred & (labels == 0))) + int(labels.sum())) == \
        info["metrics"]["image_f1_max"]
    assert info["verdicts"] == {"OK": int((~pred).sum()), "DEFECT": int(pred.sum())}
    # the console names the decision and how to apply it
    out = capsys.readouterr().out
    assert f"decision bottle: DEFECT when the normalised image score >= {t:.4f}" in out
    assert f"{int((~pred).sum())} OK, {int(pred.sum())} DEFECT" in out
    assert f"--thresholds-from {run}" in out
    # predicted masks: one PNG per image, named like the stored results, 0/255, image size
    for r in rows:
        m = cv2.imread(str(run / "bottle" / "masks" / f"{stored_stem(r['key'])}.png"), cv2.IMREAD_UNCHANGED)
        assert m.shape == (160, 160) and set(np.unique(m)) <= {0, 255}
    assert len(list((run / "bottle" / "masks").iterdir())) == len(rows)
    # the masks hold the pixels the pixel metric counted: the stored maps, normalised, >= the pixel threshold
    raw = [np.load(run / "bottle" / "maps" / f"{stored_stem(k)}.npz")["map"] for k in sorted(KEYS)]
    norm_maps, _, _, _ = category_maps_and_scale(raw, 400)
    k = sorted(KEYS).index("broken_large/000")
    want = predicted_mask(norm_maps[k], dec["pixel_threshold"], (160, 160))
    got = cv2.imread(str(run / "bottle" / "masks" / f"{stored_stem('broken_large/000')}.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got > 0, want) and want.any()
    # the report shows the decision and the verdicts
    html = (run / "report.html").read_text()
    assert "image threshold" in html and "DEFECT" in html and "colour scale" in html

    # saa predict on the same images (the run's order): the same scores, bit for bit, and verdicts
    imgs = [str(data / "bottle" / "test" / f"{k}.png") for k in sorted(KEYS)]
    out = tmp_path / "pred"
    capsys.readouterr()
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "lite", "--out", str(out),
                 "--thresholds-from", str(run), "--save-masks", *imgs] + sets(tmp_path)) == 0
    said = capsys.readouterr().out
    got = read_csv(out / "predictions.csv")
    assert [g["image"] for g in got] == imgs
    assert [float(g["score"]) for g in got] == list(scores)
    assert [g["verdict"] for g in got] == [r["verdict"] for r in rows]
    assert {"OK", "DEFECT"} == {g["verdict"] for g in got}  # the set has both, so the test can fail
    for g in got:  # one printed line per image with its verdict
        assert any(line.startswith(g["verdict"]) and line.endswith(g["image"]) for line in said.splitlines())
    assert "scores each image against the other images given" in said  # the lite limit, said
    info0 = json.loads((out / f"{Path(imgs[0]).stem}.json").read_text())
    assert info0["verdict"] == rows[0]["verdict"] and info0["scale"] == "normalised"
    m = cv2.imread(str(out / f"{Path(imgs[k]).stem}_mask.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(m > 0, want)
    panel = cv2.imread(str(out / f"{Path(imgs[0]).stem}_panels.png"))[:, :, ::-1]
    # the banner is in the verdict's colour
    colour = V.DEFECT_COLOR if rows[0]["verdict"] == "DEFECT" else V.OK_COLOR
    assert (np.abs(panel[:26].astype(int) - colour).sum(axis=-1) < 60).sum() > 20

    # saa demo takes the verdicts of the run's categories and says which category has none; a method
    # that compares the images given gets none for fewer images than the run had (a pointer to banks)
    capsys.readouterr()
    assert main(["-q", "demo", "--method", "lite", "--thresholds-from", str(run), "--out", str(tmp_path / "demo")]
                + sets(tmp_path)) == 0
    said = capsys.readouterr().out
    assert "hazelnut: no verdict (the run in" in said
    assert f"bottle: no verdict: method lite scores each image against the other images given" in said
    assert f"Give at least {len(KEYS)} images" in said and "saa bank build" in said
    assert not any(("[bottle]: DEFECT" in line or "[bottle]: OK" in line) for line in said.splitlines())
    # with as many images as the run had, each bottle gets its verdict
    assert main(["-q", "demo", "--method", "lite", "--thresholds-from", str(run), "--out", str(tmp_path / "demo2"),
                 "--category", "bottle", "--images", *imgs] + sets(tmp_path)) == 0
    said = capsys.readouterr().out
    assert all(("[bottle]: DEFECT" in line or "[bottle]: OK" in line) for line in said.splitlines() if "[bottle]" in line)
    assert "[bottle]: " in said
    # saa predict refuses a verdict for too few images, in one line, with the pointer to a reference bank
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "lite", "--out",
                 str(tmp_path / "p1"), "--thresholds-from", str(run), imgs[0]] + sets(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Give at least" in err and "--bank BANK" in err
    assert not (tmp_path / "p1" / "predictions.csv").exists()

    # --threshold replaces the image threshold on the run's scale
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "lite", "--out",
                 str(tmp_path / "p2"), "--thresholds-from", str(run), "--threshold", "2", *imgs] + sets(tmp_path)) == 0
    assert {g["verdict"] for g in read_csv(tmp_path / "p2" / "predictions.csv")} == {"OK"}


def test_thresholds_from_refuses_what_does_not_match(tmp_path, capsys, grey, put_image, put_mask):
    data = make_bottles(tmp_path / "data", put_image, put_mask)
    run = tmp_path / "run"
    assert main(["-q", "run", str(MVTEC), "--data-root", str(data), "--out", str(run), "--no-progress",
                 "--method", "toy_grey"] + sets(tmp_path)) == 0
    img = str(data / "bottle" / "test" / "good" / "000.png")
    base = ["-q", "predict", "--config", str(MVTEC), "--out", str(tmp_path / "p")]

    def err(*argv) -> str:
        capsys.readouterr()
        assert main(base + list(argv) + sets(tmp_path)) == 1
        e = capsys.readouterr().err.strip()
        assert len(e.splitlines()) == 1 and "Traceback" not in e
        return e

    assert "thresholds are for method toy_grey" in err("--category", "bottle", "--method", "lite",
                                                         "--thresholds-from", str(run), img)
    # the config's method (saa) has no model files here: the method mismatch is what is said, first
    assert "thresholds are for method toy_grey, but this run uses method saa" in err(
        "--category", "bottle", "--thresholds-from", str(run), img)
    assert "out_size 400" in err("--category", "bottle", "--method", "toy_grey", "--set", "out_size=200",
                                 "--thresholds-from", str(run), img)
    assert "no category 'hazelnut'" in err("--category", "hazelnut", "--method", "toy_grey",
                                           "--thresholds-from", str(run), img)
    assert "metrics.json not found" in err("--category", "bottle", "--method", "toy_grey",
                                           "--thresholds-from", str(tmp_path), img)
    assert "--save-masks needs a pixel threshold" in err("--category", "bottle", "--method", "toy_grey",
                                                         "--threshold", "0.1", "--save-masks", img)
    # a run without thresholds (made before they were recorded): what to do
    m = json.loads((run / "metrics.json").read_text())
    del m["categories"]["bottle"]["decision"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.json").write_text(json.dumps(m))
    assert "no thresholds recorded" in err("--category", "bottle", "--method", "toy_grey",
                                           "--thresholds-from", str(old), img)
    # a hand-edited record: one line naming the file and the field
    for bad, said in (({"image_threshold": "high"}, "image_threshold is 'high', not a number"),
                      ({"normalisation": {"eval_size": 10 ** 9, "lo": 0, "hi": 1}}, "out of range"),
                      ({"normalisation": [1, 2]}, "normalisation record incomplete")):
        m = json.loads((run / "metrics.json").read_text())
        m["categories"]["bottle"]["decision"].update(bad)
        (old / "metrics.json").write_text(json.dumps(m))
        assert said in err("--category", "bottle", "--method", "toy_grey", "--thresholds-from", str(old), img)
    assert not (tmp_path / "p").exists()  # refused before anything was written


def test_a_method_without_references_applies_the_run_scale_to_new_images(tmp_path, grey, put_image, put_mask):
    """toy_grey scores each image alone: a new image (not in the run) is put on the run's scale with
    the recorded lo / hi; the same images give the run's verdicts; --threshold alone is on the raw score."""
    data = make_bottles(tmp_path / "data", put_image, put_mask)
    run = tmp_path / "run"
    assert main(["-q", "run", str(MVTEC), "--data-root", str(data), "--out", str(run), "--no-progress",
                 "--method", "toy_grey"] + sets(tmp_path)) == 0
    rows = read_csv(run / "bottle" / "scores.csv")
    dec = load_decision(run, "bottle")
    new = tmp_path / "new" / "bottle_020.png"
    put_image(BOTTLE / "test" / "contamination" / "020.png", new)
    imgs = [str(data / "bottle" / "test" / f"{k}.png") for k in sorted(KEYS)] + [str(new)]
    out = tmp_path / "pred"
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_grey",
                 "--out", str(out), "--thresholds-from", str(run), *imgs] + sets(tmp_path)) == 0
    got = read_csv(out / "predictions.csv")
    assert [g["verdict"] for g in got[:-1]] == [r["verdict"] for r in rows]
    raw = np.load(out / "bottle_020.npy")
    lo, hi = dec.normalisation.lo, dec.normalisation.hi
    resized = cv2.resize(raw, (400, 400), interpolation=cv2.INTER_CUBIC) if raw.shape != (400, 400) else raw
    assert float(got[-1]["score"]) == pytest.approx(float(((resized.astype(np.float64) - lo) / (hi - lo)).max()),
                                                    rel=1e-6)
    assert got[-1]["verdict"] == ("DEFECT" if float(got[-1]["score"]) >= dec.image_threshold else "OK")
    # --threshold alone: the raw score of the method
    out2 = tmp_path / "raw"
    x = float(np.median([float(g["raw_score"]) for g in got]))
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_grey",
                 "--out", str(out2), "--threshold", repr(x), *imgs] + sets(tmp_path)) == 0
    raw_rows = read_csv(out2 / "predictions.csv")
    assert all(r["scale"] == "raw" and r["verdict"] == ("DEFECT" if float(r["raw_score"]) >= x else "OK")
               for r in raw_rows)
    assert {r["verdict"] for r in raw_rows} == {"OK", "DEFECT"}


# ---------------------------------------------------------------------------------------------
# saa predict DIR / globs


def test_predict_takes_folders_and_globs(tmp_path, capsys, grey, put_image, put_mask):
    data = make_bottles(tmp_path / "data", put_image, put_mask)
    test = data / "bottle" / "test"
    (test / "good" / "notes.txt").write_text("not an image")
    base = ["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_grey"] + sets(tmp_path)
    out = tmp_path / "dir"
    assert main(base + ["--out", str(out), str(test / "good")]) == 0
    assert [Path(r["image"]).name for r in read_csv(out / "predictions.csv")] == ["000.png", "002.png"]
    # a quoted glob is expanded by saa (sorted); ** recurses; a file named twice counts once
    out = tmp_path / "glob"
    assert main(base + ["--out", str(out), str(test / "*" / "000.png"), str(test / "good" / "000.png")]) == 0
    assert [r["image"] for r in read_csv(out / "predictions.csv")] == sorted(
        str(test / k / "000.png") for k in ("broken_large", "broken_small", "contamination", "good"))
    out = tmp_path / "rec"
    assert main(base + ["--out", str(out), str(test / "**" / "*.png")]) == 0
    assert len(read_csv(out / "predictions.csv")) == len(KEYS)
    # without a threshold: the raw score, no verdict, all on one scale
    assert {r["verdict"] for r in read_csv(out / "predictions.csv")} == {""}
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "x"), str(tmp_path / "data")]) == 1
    assert "folder has no image file" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x"), str(test / "*.jpg")]) == 1
    assert "no image file matches this pattern" in capsys.readouterr().err


def test_an_unlabelled_run_has_no_thresholds_and_says_why_no_masks(tmp_path, capsys, make_visa_challenge):
    data = make_visa_challenge(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["-q", "run", str(REPO / "configs" / "visa_challenge.yaml"), "--data-root", str(data), "--out", str(run),
                 "--no-progress", "--method", "lite", "--save-masks", "--categories", "pcb1"] + sets(tmp_path)) == 0
    info = json.loads((run / "metrics.json").read_text())["categories"]["pcb1"]
    assert "decision" not in info and "verdicts" not in info
    assert any("no predicted masks written" in n for n in info["notes"])
    assert not (run / "pcb1" / "masks").exists()
    assert {r["verdict"] for r in read_csv(run / "pcb1" / "scores.csv")} == {""}
    assert "decision" not in capsys.readouterr().out
    assert main(["-q", "predict", "--config", str(REPO / "configs" / "visa_challenge.yaml"), "--category", "pcb1",
                 "--method", "lite", "--out", str(tmp_path / "p"), "--thresholds-from", str(run),
                 str(next((data / "Test" / "pcb1" / "Images").iterdir()))] + sets(tmp_path)) == 1
    said = capsys.readouterr().err
    assert "no thresholds recorded (the run's test set is unlabelled)" in said and "saa bank calibrate" in said

"""``saa predict --bank BANK`` (saa.commands.predict, through run_few's bank path): every image scored
against the bank only, so one image alone and in three other batches gets bit-identical maps and
verdicts (through the command line, with lite on small real bottle images); a calibrated bank's OK /
REVIEW / DEFECT in the console, predictions.csv, the .json and the panels (amber frame for REVIEW,
outline from the pixel threshold); an uncalibrated bank gives maps and scores and says how to
calibrate; a mismatched bank, --bank with --thresholds-from and --save-masks without a pixel
threshold are one line each; a reference of the bank is never its own reference."""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.cli import main
from saa.config import config_from_dict
from saa.visualize import DEFECT_COLOR, OK_COLOR, REVIEW_COLOR

from tests.conftest import BOTTLE

TRAIN = [f"{i:03d}.png" for i in (10, 13, 19, 20, 25)]
CALIB = [f"{i:03d}.png" for i in (28, 46, 48, 53, 56, 58, 73, 80, 81, 93)]
TEST = ["good/000.png", "broken_large/000.png", "contamination/003.png", "broken_small/004.png", "good/002.png"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def small(src: Path, dst: Path, side: int = 96) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    im = cv2.imread(str(src), cv2.IMREAD_COLOR)
    assert im is not None, src
    cv2.imwrite(str(dst), cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA))
    return dst


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    """good/ (the bank's references), calib/ (other good parts), test/ (parts to judge), lite.yaml."""
    root = tmp_path_factory.mktemp("parts")
    for n in TRAIN:
        small(BOTTLE / "train" / "good" / n, root / "good" / n)
    for n in CALIB:
        small(BOTTLE / "train" / "good" / n, root / "calib" / n)
    for rel in TEST:
        small(BOTTLE / "test" / rel, root / "test" / rel.replace("/", "_"))
    cfg = config_from_dict({"method": "lite", "out_size": 32,
                            "categories": {"bottle": {"object": "bottle,", "n_objects": 1, "k_mask": 1,
                                                      "area_ratio": 0.5}},
                            "method_options": {"lite": {"size": 64}}})
    (root / "lite.yaml").write_text(cfg.to_yaml())
    return root


def bank_of(parts: Path, tmp: Path, calibrate: bool) -> Path:
    out = tmp / "bank"
    assert main(["-q", "bank", "build", "--config", str(parts / "lite.yaml"), "--category", "bottle", "--out", str(out),
                 str(parts / "good"), "--no-progress"]) == 0
    if calibrate:  # 10 good images: 1 DEFECT at 0.1, 2 more REVIEW at 0.3
        assert main(["-q", "bank", "calibrate", str(out), "--images", str(parts / "calib"), "--false-alarm-rate", "0.1",
                     "--review-rate", "0.3", "--no-progress"]) == 0
    return out


def predict(parts: Path, bank: Path, out: Path, *images, extra=()) -> int:
    return main(["-q", "predict", "--config", str(parts / "lite.yaml"), "--category", "bottle", "--bank", str(bank),
                 "--out", str(out), *map(str, images), *extra])


def rows(out: Path) -> dict[str, dict]:
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        return {Path(r["image"]).name: r for r in csv.DictReader(f)}


def test_an_image_alone_and_in_three_batches_gets_the_same_map_and_verdict(parts, tmp_path, capsys):
    bank = bank_of(parts, tmp_path, calibrate=True)
    t = sorted((parts / "test").glob("*.png"))
    x = parts / "test" / "broken_large_000.png"
    others = [p for p in t if p != x]
    calls = {"alone": [x], "b1": [others[0], x], "b2": [others[3], others[2], x, others[1]],
             "b3": [x, *others, parts / "calib" / CALIB[0]]}
    for name, images in calls.items():
        assert predict(parts, bank, tmp_path / name, *images) == 0, capsys.readouterr().err
    maps = {name: np.load(tmp_path / name / "broken_large_000.npy") for name in calls}
    verdicts = {name: rows(tmp_path / name)["broken_large_000.png"] for name in calls}
    for name in calls:
        assert maps[name].dtype == np.float32 and maps[name].shape == (32, 32)
        assert np.array_equal(maps[name], maps["alone"]), name
        for key in ("raw_score", "verdict", "threshold", "review_threshold"):
            assert verdicts[name][key] == verdicts["alone"][key], (name, key)
        info = json.loads((tmp_path / name / "broken_large_000.json").read_text())
        assert info["verdict"] == verdicts["alone"]["verdict"] and repr(info["raw_score"]) == verdicts[name]["raw_score"]
    assert verdicts["alone"]["verdict"] == "DEFECT"  # a broken bottle against 5 good ones
    # every other image of a batch too: its map is the one it gets alone
    for p in others:
        assert predict(parts, bank, tmp_path / ("one_" + p.stem), p) == 0
        assert np.array_equal(np.load(tmp_path / ("one_" + p.stem) / f"{p.stem}.npy"),
                              np.load(tmp_path / "b3" / f"{p.stem}.npy"))


def test_calibrated_bank_gives_ok_review_defect_everywhere(parts, tmp_path, capsys):
    bank = bank_of(parts, tmp_path, calibrate=True)
    cal = json.loads((bank / "calibration.json").read_text())
    capsys.readouterr()
    out = tmp_path / "out"
    # the calibration images themselves: exactly their recorded verdicts, 1 DEFECT, 2 REVIEW, 7 OK
    assert predict(parts, bank, out, parts / "calib", extra=["--save-masks"]) == 0
    printed = capsys.readouterr().out
    got = rows(out)
    scores = {c["name"]: c["score"] for c in cal["images"]}
    assert [r["verdict"] for r in got.values()].count("DEFECT") == 1
    assert [r["verdict"] for r in got.values()].count("REVIEW") == 2
    assert [r["verdict"] for r in got.values()].count("OK") == 7
    for name, r in got.items():
        assert float(r["raw_score"]) == scores[name] and r["scale"] == "raw"
        assert float(r["threshold"]) == cal["t_defect"] and float(r["review_threshold"]) == cal["t_review"]
        assert (out / f"{Path(name).stem}_mask.png").is_file()
        info = json.loads((out / f"{Path(name).stem}.json").read_text())
        assert info["verdict"] == r["verdict"] and info["review_threshold"] == cal["t_review"]
        assert info["pixel_threshold"] == cal["pixel_threshold"]
    assert printed.count("DEFECT  raw score") == 1 and printed.count("OK      raw score") == 7
    # each printed number has the digits it takes to read as what it is: a score just below the DEFECT
    # threshold (the calibration's second-highest score, here) never reads as equal to it
    checked = 0
    for line in printed.splitlines():
        m = re.match(r"(OK|REVIEW|DEFECT) +raw score (\S+)(?: >= review threshold (\S+),)? ([<>]=?) threshold (\S+) ", line)
        if m is None:
            continue
        verdict, score, review_t, op, t = m.groups()
        assert score != t and float(score) != float(t)
        assert (float(score) >= float(t)) == (op == ">=") == (verdict == "DEFECT")
        if verdict == "REVIEW":
            assert float(review_t) <= float(score) < float(t) and review_t != score
        checked += 1
    assert checked == 10
    # the panels: the verdict's colour frames them (amber for REVIEW), the calibration's thresholds are written
    for verdict, colour in (("REVIEW", REVIEW_COLOR), ("DEFECT", DEFECT_COLOR), ("OK", OK_COLOR)):
        name = next(n for n, r in got.items() if r["verdict"] == verdict)
        panels = cv2.imread(str(out / f"{Path(name).stem}_panels.png"))[:, :, ::-1]
        assert (panels == np.array(colour, np.uint8)).all(axis=2).sum() > 500, verdict
    # the outline: the pixel threshold of the calibration on the out_size map, at the image size
    name = next(n for n, r in got.items() if r["verdict"] == "DEFECT")
    amap = np.load(out / f"{Path(name).stem}.npy")
    want = cv2.resize((amap >= cal["pixel_threshold"]).astype(np.uint8), (96, 96), interpolation=cv2.INTER_NEAREST)
    mask = cv2.imread(str(out / f"{Path(name).stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(mask > 0, want > 0) and (mask > 0).any()
    # a threshold by hand replaces the calibration's verdicts (OK / DEFECT on the raw score)
    assert predict(parts, bank, tmp_path / "hand", parts / "calib", extra=["--threshold", "1e9"]) == 0
    assert {r["verdict"] for r in rows(tmp_path / "hand").values()} == {"OK"}


def test_uncalibrated_bank_gives_maps_and_says_how_to_calibrate(parts, tmp_path, capsys):
    bank = bank_of(parts, tmp_path, calibrate=False)
    capsys.readouterr()
    assert predict(parts, bank, tmp_path / "out", parts / "test") == 0
    printed = capsys.readouterr().out
    assert "is not calibrated" in printed and f"saa bank calibrate {bank}" in printed
    got = rows(tmp_path / "out")
    assert len(got) == len(TEST) and {r["verdict"] for r in got.values()} == {""}
    assert all(r["threshold"] == "" for r in got.values())
    assert len(list((tmp_path / "out").glob("*.npy"))) >= len(TEST)
    # masks need a pixel threshold: one line naming the bank and the fix
    assert predict(parts, bank, tmp_path / "m", parts / "test", extra=["--save-masks"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "saa bank calibrate" in err and not (tmp_path / "m").exists()


def test_a_reference_is_never_its_own_reference(parts, tmp_path, capsys):
    bank = bank_of(parts, tmp_path, calibrate=False)
    ref = parts / "good" / TRAIN[0]
    copy = tmp_path / "copy.png"
    shutil.copyfile(ref, copy)
    capsys.readouterr()
    assert predict(parts, bank, tmp_path / "out", ref, copy) == 0
    printed = capsys.readouterr().out
    assert printed.count("never against itself") == 2  # both names: the content is reference 1
    amap = np.load(tmp_path / "out" / f"{Path(TRAIN[0]).stem}.npy")
    assert float(amap.max()) > 0.0  # scored against the other references, not against itself (all 0)
    assert np.array_equal(amap, np.load(tmp_path / "out" / "copy.npy"))


def test_mismatched_bank_and_two_scales_are_one_line(parts, tmp_path, capsys):
    bank = bank_of(parts, tmp_path, calibrate=False)
    capsys.readouterr()

    def refused(*extra, config=None) -> str:
        args = ["predict", "--config", str(config or parts / "lite.yaml"), "--category", "bottle", "--bank", str(bank),
                "--out", str(tmp_path / "x"), str(parts / "test"), *extra]
        assert main(args) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        assert not (tmp_path / "x").exists()
        return err

    assert "choose one" in refused("--thresholds-from", str(tmp_path))
    assert "method_options.lite.size = 64" in refused("--set", "method_options.lite.size=96")
    assert "out_size" in refused("--set", "out_size=48")
    other = tmp_path / "other.yaml"
    other.write_text((parts / "lite.yaml").read_text().replace("bottle:", "screw:"))
    assert "category 'bottle', not 'screw'" in refused("--category", "screw", config=other)

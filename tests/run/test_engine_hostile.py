"""Hostile and careless input during a run (issue #13, the engine's part): an OS error in the
middle of a category is one line and the run resumes where it stopped; image names too long for
the file system get safe stored names; a category of identical images is reported as constant
instead of stretching float noise to [0, 1].

Lite mode (real EfficientNet-Lite0 features) on small real images; no Grounding DINO or SAM file."""
from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

from saa import results as results_module
from saa.cli import main

from tests.conftest import BOTTLE, REPO


MVTEC = REPO / "configs" / "mvtec.yaml"


def _run_argv(data: Path, out: Path, tmp_path: Path) -> list[str]:
    return ["-q", "run", str(MVTEC), "--data-root", str(data), "--out", str(out), "--no-progress", "--method",
            "lite", "--set", f"models.weights_dir={tmp_path / 'none'}"]


def test_disk_full_mid_run_is_one_line_and_the_rerun_computes_only_the_rest(tmp_path, capsys, monkeypatch, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    out = tmp_path / "run"
    real = results_module.atomic_write_bytes
    writes = {"n": 0}

    def full_after_one(path, data_bytes):
        writes["n"] += 1
        if writes["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data_bytes)

    monkeypatch.setattr(results_module, "atomic_write_bytes", full_after_one)
    assert main(_run_argv(data, out, tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saa: error: ") and "no space left" in err[0].lower(), err
    assert "Traceback" not in "\n".join(err)
    assert len(list((out / "bottle" / "maps").glob("*.npz"))) == 1  # the result written before it is kept
    assert len(list((out / "bottle" / "cross_features").glob("*.npz"))) == 3  # and the pass-1 features
    monkeypatch.setattr(results_module, "atomic_write_bytes", real)
    assert main(_run_argv(data, out, tmp_path)) == 0
    info = json.loads((out / "metrics.json").read_text())["categories"]["bottle"]
    assert (info["computed"], info["reused"], info["features_computed"]) == (2, 1, 0)


def test_image_names_too_long_for_a_file_get_safe_stored_names(tmp_path, capsys, make_mvtec, put_image):
    data = make_mvtec(tmp_path / "data")
    long_stem = "x" * 244
    put_image(BOTTLE / "test" / "good" / "002.png", data / "bottle" / "test" / "good" / f"{long_stem}.png")
    out = tmp_path / "run"
    assert main(_run_argv(data, out, tmp_path)) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["totals"]["computed"] == 4
    names = [p.name for p in (out / "bottle" / "maps").iterdir()]
    assert all(len(n.encode()) <= 255 for n in names) and len([n for n in names if n.endswith(".npz")]) == 4
    assert main(_run_argv(data, out, tmp_path)) == 0  # the same stored name again: everything reused
    assert json.loads((out / "metrics.json").read_text())["totals"]["computed"] == 0
    # saa predict writes its files under a shortened, still distinct stem
    pred = tmp_path / "pred"
    imgs = [str(data / "bottle" / "test" / "good" / f"{long_stem}.png"), str(data / "bottle" / "test" / "good" / "000.png")]
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "lite", "--out",
                 str(pred), *imgs, "--set", f"models.weights_dir={tmp_path / 'none'}"]) == 0
    written = sorted(p.name for p in pred.iterdir())
    assert all(len(n.encode()) <= 255 for n in written) and len([n for n in written if n.endswith("_saliency.npy")]) == 2


def test_identical_images_are_reported_as_constant_not_stretched(tmp_path, put_image, put_mask):
    root = tmp_path / "data"
    src = BOTTLE / "test" / "good" / "000.png"
    for rel in ("good/000.png", "good/001.png", "broken_large/000.png"):
        put_image(src, root / "bottle" / "test" / rel)
    put_mask(BOTTLE / "ground_truth" / "broken_large" / "000_mask.png",
              root / "bottle" / "ground_truth" / "broken_large" / "000_mask.png")
    out = tmp_path / "run"
    assert main(_run_argv(root, out, tmp_path)) == 0
    result = json.loads((out / "metrics.json").read_text())
    info = result["categories"]["bottle"]
    assert any("constant up to float noise" in n for n in info["notes"]), info
    assert info["metrics"]["image_auroc"] == 50.0 and info["metrics"]["pixel_auroc"] == 50.0
    assert "constant up to float noise" in (out / "report.html").read_text()
    with open(out / "bottle" / "scores.csv", newline="") as f:
        scores = [float(r["image_score"]) for r in csv.DictReader(f)]
    assert scores == [0.0, 0.0, 0.0]

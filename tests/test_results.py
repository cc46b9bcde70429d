"""The run folder (issues 20, 22, 24): one module knows its layout (saa.results.RunFolder); metrics.json,
decision records, sidecars and scores.csv are typed records read back with one-line errors; one writer
at a time (run.lock, stale locks taken over); a run state that keeps two runs' files from being
reported together; runs without masks or without defective images finish and say which metrics
could not be computed; a decision carries its quality, and a weak one is warned and refused; one
per-image result file (map, score, fingerprint) reads back only when it is whole and current.

A toy method defined here (no model file) on small synthetic images in a `folder` dataset, so each
run costs well under a second."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.cli import main
from saa.errors import SaaError
from saa.methods import Method, register_method, unregister_method
from saa.methods.base import hash_of
from saa.prediction import Prediction
from saa.records import RecordError, parse_json
from saa.results import ImageResult, RunFolder, load_image_result, map_file_name, save_image_result

from tests.conftest import REPO


MVTEC = REPO / "configs" / "mvtec.yaml"


SIDE = 48


class Spot(Method):
    """Distance of each pixel's grey level from the image's median; no references, no model."""

    name = "toy_spot"
    panels = ("image", "anomaly_map")
    calls = 0
    fail_after = None  # raise after this many predictions (an interrupted run)

    def fingerprint(self, category, references=None):
        return "toy-spot-" + hash_of({"out": self.config.out_size})

    def predict(self, rgb, category, *, bank=None, index=None):
        Spot.calls += 1
        if Spot.fail_after is not None and Spot.calls > Spot.fail_after:
            raise SaaError("toy_spot: interrupted on purpose")
        grey = rgb.mean(axis=2).astype(np.float32) / 255.0
        full = np.abs(grey - np.median(grey)).astype(np.float32)
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          method=self.name, method_label="toy spot", has_regions=False)


@pytest.fixture(autouse=True)
def spot():
    register_method(Spot)
    Spot.calls, Spot.fail_after = 0, None
    try:
        yield Spot
    finally:
        unregister_method(Spot.name)


def _picture(seed: int, spot: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (120 + rng.integers(-6, 7, (SIDE, SIDE, 3))).astype(np.uint8)
    if spot:
        y, x = 8 + seed % 20, 10 + (3 * seed) % 20
        img[y:y + 8, x:x + 8] = 250
    return img


def make_parts(root: Path, normal: int = 2, defective: int = 3, masks: bool = False, inverted: bool = False) -> Path:
    """A `folder` dataset: good/*.png and bad/*.png (and masks/*.png). The defective parts carry a
    bright spot, the good ones none; ``inverted``: the other way round (a detector worse than chance)."""
    for i in range(normal):
        p = root / "good" / f"g{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(p), _picture(i, spot=inverted))
    for i in range(defective):
        p = root / "bad" / f"b{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        img = _picture(100 + i, spot=not inverted)
        assert cv2.imwrite(str(p), img)
        if masks:
            m = root / "masks" / f"b{i}.png"
            m.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(m), np.where(img.min(axis=2) > 200, 255, 0).astype(np.uint8))
    return root


def run_argv(data: Path, out: Path, *extra: str, masks: bool = False, out_size: int = 32) -> list[str]:
    argv = ["-q", "run", str(MVTEC), "--out", str(out), "--no-progress", "--method", "toy_spot",
            "--set", f"models.weights_dir={out.parent / 'no_weights'}", "--set", "dataset.kind=folder",
            "--set", f"dataset.root={data}", "--set", "dataset.options.normal_dir=good",
            "--set", "dataset.options.defect_dirs=[bad]", "--set", "dataset.options.category=bottle",
            "--set", f"out_size={out_size}", "--set", "dataset.options.eval_size=32"]
    if masks:
        argv += ["--set", "dataset.options.mask_dir=masks"]
    return argv + list(extra)


def predict_argv(run: Path, out: Path, *images, extra=()) -> list[str]:
    return ["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "toy_spot", "--set",
            "out_size=32", "--out", str(out), "--thresholds-from", str(run), *extra, *map(str, images)]


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# runs without masks, with only good images: exit 0, say which metrics and why


def test_runs_without_masks_or_defective_images_finish_and_say_why(tmp_path, capsys):
    # labelled, no masks (masks are optional): image metrics and a decision, pixel metrics n/a with the reason
    data = make_parts(tmp_path / "parts")
    out = tmp_path / "nomasks"
    assert main(run_argv(data, out)) == 0
    said = capsys.readouterr().out
    info = json.loads((out / "metrics.json").read_text())["categories"]["bottle"]
    assert info["metrics"]["image_auroc"] == 100.0 and info["metrics"]["pixel_auroc"] is None
    assert set(info["unavailable"]) == {"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro", "region_f1_max"}
    assert "no ground-truth masks" in info["unavailable"]["aupro"]
    assert "P-AUROC, P-AP, P-F1max, AUPRO@0.3, R-F1max not computed: the dataset has no ground-truth masks" in said
    assert "no pixel threshold: no ground-truth masks" in said
    assert "not computed" in (out / "metrics.md").read_text() and (out / "report.html").is_file()

    # only good images: no metric, no threshold, exit 0 and the reason
    good = make_parts(tmp_path / "good_only", defective=0)
    (good / "bad").mkdir()
    out = tmp_path / "goodonly"
    assert main(run_argv(good, out)) == 0
    said = capsys.readouterr().out
    info = json.loads((out / "metrics.json").read_text())["categories"]["bottle"]
    assert all(v is None for v in info["metrics"].values()) and "verdicts" not in info
    assert set(info["unavailable"]) == set(info["metrics"])
    assert "not computed: no anomalous image in the category" in said
    assert "decision bottle: no image threshold (the category has no anomalous image)" in said
    assert (out / "report.html").is_file()


# ---------------------------------------------------------------------------------------------
# a decision carries its quality; a weak one is warned and refused


def test_a_weak_decision_is_warned_in_the_run_and_refused_by_predict(tmp_path, capsys):
    """The issue's magnetic tiles: a detector worse than chance on a mostly defective set; F1-max is
    reached by calling everything DEFECT. The run says so (console, metrics.md, report); predict
    refuses the thresholds in one line unless --accept-weak-decision."""
    data = make_parts(tmp_path / "parts", normal=2, defective=5, inverted=True)
    run = tmp_path / "run"
    assert main(run_argv(data, run)) == 0
    said = capsys.readouterr().out
    info = json.loads((run / "metrics.json").read_text())["categories"]["bottle"]
    q = info["decision"]["quality"]
    assert info["metrics"]["image_auroc"] < 50.0
    assert (q["ok"], q["defect"], q["false_alarms"], q["misses"]) == (0, 7, 2, 0)
    assert (q["false_alarm_rate"], q["miss_rate"], q["ok_share"], q["defect_share"]) == (1.0, 0.0, 0.0, 1.0)
    assert q["weak"] and any("same verdict" in r for r in q["reasons"])
    assert any("no better than chance" in r for r in q["reasons"])
    assert "warning: bottle: WEAK DECISION" in said and "0 OK, 7 DEFECT — WEAK" in said
    assert "WEAK DECISION" in (run / "metrics.md").read_text()
    assert "Weak decision" in (run / "report.html").read_text()

    img = data / "good" / "g0.png"
    assert main(predict_argv(run, tmp_path / "p", img)) == 1
    err = one_error(capsys)
    assert "weak decision" in err and "no better than chance" in err and "--accept-weak-decision" in err
    assert not (tmp_path / "p").exists()
    # accepted: the verdicts of the run's decision (every image DEFECT, as the run said)
    assert main(predict_argv(run, tmp_path / "p", img, extra=["--accept-weak-decision"])) == 0
    assert "DEFECT" in capsys.readouterr().out
    # a threshold given by hand is the user's decision: not refused
    assert main(predict_argv(run, tmp_path / "p2", img, extra=["--threshold", "0.5"])) == 0

    # the flags of a hand-edited record are not trusted: the numbers decide
    m = json.loads((run / "metrics.json").read_text())
    m["categories"]["bottle"]["decision"]["quality"].update(weak=False, reasons=[])
    (run / "metrics.json").write_text(json.dumps(m))
    assert main(predict_argv(run, tmp_path / "p3", img)) == 1
    assert "weak decision" in one_error(capsys)


def test_a_good_decision_records_its_quality_and_is_accepted(tmp_path, capsys):
    data = make_parts(tmp_path / "parts", normal=3, defective=3, masks=True)
    run = tmp_path / "run"
    assert main(run_argv(data, run, masks=True)) == 0
    q = json.loads((run / "metrics.json").read_text())["categories"]["bottle"]["decision"]["quality"]
    assert q["image_auroc"] == 100.0 and not q["weak"] and q["reasons"] == []
    assert (q["images"], q["normal"], q["anomalous"], q["ok"], q["defect"]) == (6, 3, 3, 3, 3)
    assert "WEAK" not in capsys.readouterr().out
    assert main(predict_argv(run, tmp_path / "p", data / "bad" / "b0.png", data / "good" / "g0.png")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("DEFECT") and ln.endswith("b0.png") for ln in lines)
    assert any(ln.startswith("OK") and ln.endswith("g0.png") for ln in lines)


# ---------------------------------------------------------------------------------------------
# records read back: typed, one line naming the file, the field and the problem


@pytest.fixture
def good_run(tmp_path):
    data = make_parts(tmp_path / "parts", normal=3, defective=3, masks=True)
    run = tmp_path / "run"
    assert main(run_argv(data, run, masks=True)) == 0
    return run, data


@pytest.mark.parametrize("edit, said", [
    (lambda d: d.pop("method"), "has no method: without its provenance"),
    (lambda d: d.pop("fingerprint"), "has no fingerprint"),
    (lambda d: d.update(out_size=None), "has no out_size"),
    (lambda d: d["normalisation"].update(lo=d["normalisation"]["hi"] + 1.0), "lo"),
    (lambda d: d["normalisation"].update(constant="false"), "constant is 'false', not true or false"),
    (lambda d: d["normalisation"].update(lo=True), "normalisation.lo is True, not a number"),
    (lambda d: d.update(image_threshold="high"), "image_threshold is 'high', not a number"),
    (lambda d: d["quality"].update(false_alarm_rate=0.9), "false_alarm_rate is 0.9, but the counts give"),
    (lambda d: d["quality"].update(ok=-1), "quality.ok is -1, out of range"),
])
def test_hostile_decision_records_are_refused_in_one_line(good_run, tmp_path, capsys, edit, said):
    run, data = good_run
    m = json.loads((run / "metrics.json").read_text())
    edit(m["categories"]["bottle"]["decision"])
    (run / "metrics.json").write_text(json.dumps(m))
    capsys.readouterr()
    assert main(predict_argv(run, tmp_path / "p", data / "good" / "g0.png")) == 1
    err = one_error(capsys)
    assert err.startswith(f"saa: error: {run / 'metrics.json'}: categories.bottle.decision") and said in err, err
    if said == "lo":
        assert "swapped bounds" in err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("number", ["1e999", "-1e999", "9" * 400, "9" * 5000])
def test_numbers_too_large_for_a_float_are_one_line(good_run, tmp_path, capsys, number):
    run, data = good_run
    text = (run / "metrics.json").read_text()
    m = json.loads(text)
    t = m["categories"]["bottle"]["decision"]["image_threshold"]
    bad = text.replace(f'"image_threshold": {json.dumps(t)}', f'"image_threshold": {number}', 1)
    assert bad != text
    (run / "metrics.json").write_text(bad)
    assert main(predict_argv(run, tmp_path / "p", data / "good" / "g0.png")) == 1
    err = one_error(capsys)
    assert str(run / "metrics.json") in err
    assert "too large for a float" in err or "Exceeds the limit" in err or "corrupt" in err
    # the report says it in one line too
    assert main(["report", str(run)]) == 1
    assert str(run / "metrics.json") in one_error(capsys)


def test_records_are_typed_models(good_run):
    run, _ = good_run
    folder = RunFolder(run)
    result = folder.read_metrics()
    entry = result.categories["bottle"]
    assert entry.decision.method == "toy_spot" and entry.decision.quality.image_auroc == 100.0
    assert entry.map_fingerprint and result.settings_fingerprint and result.config_sha256 == folder.config_sha256()
    rows = folder.category("bottle").read_scores()
    assert [r.key for r in rows] == sorted(r.key for r in rows) and {r.label for r in rows} == {0, 1}
    assert all(isinstance(r.image_score, float) for r in rows)
    side = folder.category("bottle").read_sidecar(rows[0].key)
    assert side is not None and side.key == rows[0].key
    # the JSON reader keeps crafted numbers bounded and inert
    assert parse_json('{"a": 1e999}')["a"] == "1e999"
    with pytest.raises(ValueError):
        parse_json('{"a": NaN}')


def test_a_broken_scores_csv_or_sidecar_is_one_line_or_recomputed(good_run, capsys):
    run, data = good_run
    folder = RunFolder(run)
    scores = folder.category("bottle").scores_csv
    text = scores.read_text()
    lines = text.splitlines()
    cells = lines[1].split(",")
    cells[3] = "abc"
    scores.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(RecordError, match=r"scores.csv: line 2: image_score is 'abc', not a number"):
        folder.category("bottle").read_scores()
    assert main(["-q", "report", str(run)]) == 0  # the category says it could not be drawn; the rest is there
    html = (run / "report.html").read_text()
    assert "could not be drawn" in html and "image_score is &#x27;abc&#x27;, not a number" in html
    scores.write_text(text)
    # a sidecar with a crafted number or the wrong shape: that image is recomputed, no traceback
    key = folder.category("bottle").read_scores()[0].key
    side = folder.category("bottle").sidecar_path(key)
    side.write_text('{"key": 1e999}')
    Spot.calls = 0
    assert main(run_argv(data, run, masks=True)) == 0
    assert Spot.calls == 1  # only that image
    assert json.loads(side.read_text())["key"] == key


# ---------------------------------------------------------------------------------------------
# one writer at a time


_HOLDER = textwrap.dedent("""
    import sys
    from saa.results import RunFolder
    lock = RunFolder(sys.argv[1]).lock(command="saa run configs/other.yaml --out " + sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.readline()
""")


def test_a_second_run_into_the_same_folder_names_the_first_and_a_stale_lock_is_taken_over(tmp_path, capsys,
                                                                                          caplog):
    data = make_parts(tmp_path / "parts")
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(run_argv(data, out)) == 1
        err = one_error(capsys)
        assert err.startswith(f"saa: error: {out} is in use by another run: process {holder.pid} on host "
                              f"{socket.gethostname()}, started ")
        assert "command: saa run configs/other.yaml" in err and "choose another output folder" in err
        assert not (out / "config.yaml").exists() and not (out / "bottle").exists()  # nothing written
        # the report waits for the run too
        assert main(["report", str(out)]) == 1
        assert f"is being written by a run now (process {holder.pid}" in one_error(capsys)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # killed: its lock file is left behind, and taken over with a note naming it
    assert str(holder.pid) in (out / "run.lock").read_text()
    with caplog.at_level("WARNING"):
        assert main(run_argv(data, out)) == 0
    assert f"taking over the stale lock of process {holder.pid}" in caplog.text
    assert not (out / "run.lock").exists()  # released at the end
    assert json.loads((out / "run_state.json").read_text())["status"] == "complete"


def test_the_lock_is_one_writer_in_one_process_too(tmp_path):
    folder = RunFolder(tmp_path / "run")
    first = folder.lock(command="first")
    assert first.acquire() is None
    second = folder.lock(command="second")
    with pytest.raises(SaaError, match="is in use by another run: process .* command: first"):
        second.acquire()
    assert folder.holder().command == "first"
    first.release()
    assert folder.holder() is None and not folder.lock_file.exists()
    with folder.lock(command="third"):
        assert folder.holder().command == "third"


# ---------------------------------------------------------------------------------------------
# run state: a folder never shows two runs' files as one


def test_an_interrupted_rerun_with_other_settings_never_reports_the_old_metrics(tmp_path, capsys, caplog):
    data = make_parts(tmp_path / "parts", normal=3, defective=3, masks=True)
    out = tmp_path / "run"
    assert main(run_argv(data, out, masks=True)) == 0
    assert json.loads((out / "run_state.json").read_text())["status"] == "complete"
    # rerun with other settings (out_size 40), interrupted after two images
    Spot.calls, Spot.fail_after = 0, 2
    with caplog.at_level("WARNING"):
        assert main(run_argv(data, out, masks=True, out_size=40)) == 1
    assert "interrupted on purpose" in capsys.readouterr().err
    assert "the folder held the results of a run with other settings" in caplog.text
    state = json.loads((out / "run_state.json").read_text())
    assert state["status"] == "running"
    assert not (out / "metrics.json").exists() and not (out / "report.html").exists()
    assert "out_size: 40" in (out / "config.yaml").read_text()
    # the report and predict refuse in one line, saying what to run
    assert main(["report", str(out)]) == 1
    err = one_error(capsys)
    assert "has not finished" in err and f"saa run {out / 'config.yaml'} --out {out}" in err
    assert main(predict_argv(out, tmp_path / "p", data / "good" / "g0.png")) == 1
    assert "has not finished" in one_error(capsys)
    # finishing it: complete, and the report has no warning
    Spot.fail_after = None
    assert main(run_argv(data, out, masks=True, out_size=40)) == 0
    assert json.loads((out / "run_state.json").read_text())["status"] == "complete"
    caplog.clear()
    assert main(["-q", "report", str(out)]) == 0
    assert "mixes files of different runs" not in (out / "report.html").read_text()


def test_the_report_labels_a_folder_whose_files_come_from_different_runs(tmp_path, capsys, caplog):
    data = make_parts(tmp_path / "parts", normal=3, defective=3, masks=True)
    out = tmp_path / "run"
    other = tmp_path / "other"
    assert main(run_argv(data, out, masks=True)) == 0
    assert main(run_argv(data, other, masks=True, out_size=40)) == 0
    folder = RunFolder(out)
    # a map of another run (other settings) copied in: that category's pictures leave it out, and say so
    key = folder.category("bottle").read_scores()[0].key
    src = RunFolder(other).category("bottle").result_path(key)
    folder.category("bottle").result_path(key).write_bytes(src.read_bytes())
    with caplog.at_level("WARNING"):
        assert main(["-q", "report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "1 of 6 stored maps were made by another run than these metrics" in html
    assert "1 of 6 stored maps were made by another run" in caplog.text
    # config.yaml replaced after the run
    (out / "config.yaml").write_text((other / "config.yaml").read_text())
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["-q", "report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "This folder mixes files of different runs" in html and "config.yaml is not the one this run wrote" in html
    assert "config.yaml is not the one this run wrote" in caplog.text
    # a rerun with the same settings that was interrupted: the old metrics stay (same settings), labelled
    assert main(run_argv(data, out, masks=True)) == 0  # repairs the folder
    Spot.calls, Spot.fail_after = 0, 0
    assert main(run_argv(data, out, "--no-resume", masks=True)) == 1
    capsys.readouterr()
    assert (out / "metrics.json").is_file()
    assert main(["-q", "report", str(out)]) == 0
    assert "did not finish: metrics.json is from the earlier complete run with the same settings" in \
        (out / "report.html").read_text()


# ---------------------------------------------------------------------------------------------
# one per-image result file: round trip, partial and corrupt files


def test_image_result_roundtrip_and_corrupt_files(tmp_path):
    m = np.linspace(0, 2, 16 * 16, dtype=np.float32).reshape(16, 16)
    p = tmp_path / "maps" / map_file_name("good/000-a.b")
    assert p.name == "good__000-a.b.npz"
    p.parent.mkdir()
    save_image_result(p, ImageResult(m, 2.0, (30, 40)), "fp1", image="x.png", regions={"a": np.float32(1)})
    r = load_image_result(p, 16, "fp1")
    assert r is not None and np.array_equal(r.map, m) and r.image_score == 2.0 and r.image_size == (30, 40)
    assert json.loads(p.with_name("good__000-a.b.json").read_text()) == {"a": 1.0}
    assert load_image_result(p, 32, "fp1") is None  # other out_size
    assert load_image_result(p, 16, "fp2") is None  # other settings
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # partial file
    assert load_image_result(p, 16, "fp1") is None
    p.write_bytes(b"")
    assert load_image_result(p, 16, "fp1") is None
    assert load_image_result(tmp_path / "missing.npz") is None

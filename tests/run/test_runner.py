"""Benchmark runs (saa.run, saa.evaluation, saa.results, saa.vand, saa run / saa prepare, run_*.py).

End-to-end tests run the real pipeline with the tiny random-weight models on tiny trees of real
images (resized small; Grounding DINO still works at 800 px, so each image costs seconds). Each
dataset kind is run once per module (fixture ``runs``): a first run, then a second run in the same
output folder that must reuse every per-image file. Tests then check the written files.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa import vand as V
from saa.evaluation import (METRIC_KEYS, category_maps_and_scale, eval_size_of, format_table, mean_metrics,
                            resize_masks, split_dataset_options)
from saa.results import ImageResult, load_image_result, map_file_name, save_image_result
from saa.run import evaluate_run
from saa.config import load_config
from saa.errors import ConfigError, DatasetError
from saa.testing import tiny_config_overrides

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
BOTTLE = REALDATA / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection" / "bottle"
MTD = REALDATA / "mtd__abin24_Magnetic-tile-defect-datasets"
PCB = REALDATA / "visa_pcb_samples__rezafarjad_industrial-pcb-anomaly-detection"
HAZELNUT = REALDATA / "hazelnut_toy_docs__openvinotoolkit_anomalib" / "hazelnut_toy"

SIDE = 160
# fewer detector calls per image: the general prompts are dropped in these runs
FAST = ["general_prompts=[]"]


# ---------------------------------------------------------------------------------------------
# tiny trees of real images


def _put_image(src: Path, dst: Path, side: int | None = SIDE) -> None:
    im = cv2.imread(str(src), cv2.IMREAD_COLOR)
    assert im is not None, src
    if side:
        im = cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)
    dst.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(dst), im)


def _put_mask(src: Path, dst: Path, side: int | None = SIDE, empty: bool = False, shape=None) -> None:
    if empty:
        m = np.zeros(shape, np.uint8)
    else:
        m = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        assert m is not None, src
        m = np.where(m > 127, 255, 0).astype(np.uint8)  # JPEG masks: binarise
        if side:
            m = cv2.resize(m, (side, side), interpolation=cv2.INTER_NEAREST)
    dst.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(dst), m)


def make_mvtec(root: Path) -> Path:
    for rel in ("good/000.png", "broken_large/000.png", "contamination/000.png"):
        _put_image(BOTTLE / "test" / rel, root / "bottle" / "test" / rel)
        if not rel.startswith("good"):
            m = rel.replace(".png", "_mask.png")
            _put_mask(BOTTLE / "ground_truth" / m, root / "bottle" / "ground_truth" / m)
    return root


def _pcb_normal(cat: str) -> np.ndarray:
    """A defect-free version of the real VisA sample: the defect inpainted (as its manifest says)."""
    img = cv2.imread(str(PCB / cat / "defective.jpg"))
    m = (cv2.imread(str(PCB / cat / "ground_truth.jpg"), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    return cv2.inpaint(img, m, 7, cv2.INPAINT_TELEA)


def make_visa_public(root: Path) -> Path:
    d = root / "pcb1"
    _put_image(PCB / "pcb1" / "defective.jpg", d / "test" / "bad" / "000.JPG")
    _put_mask(PCB / "pcb1" / "ground_truth.jpg", d / "ground_truth" / "bad" / "000.png")
    (d / "test" / "good").mkdir(parents=True)
    cv2.imwrite(str(d / "test" / "good" / "0000.JPG"), cv2.resize(_pcb_normal("pcb1"), (SIDE, SIDE)))
    return root


CHALLENGE_STEMS = {"pcb1": "000-a.b", "pcb2": "0001"}


def make_visa_challenge(root: Path) -> Path:
    for cat, stem in CHALLENGE_STEMS.items():
        _put_image(PCB / cat / "defective.jpg", root / "Test" / cat / "Images" / f"{stem}.JPG")
    return root


def make_ksdd2(root: Path) -> Path:
    # KSDD2 layout, filled with real magnetic-tile images (one defective, one normal)
    bad = MTD / "MT_Blowhole" / "Imgs" / "exp1_num_108719"
    free = sorted((MTD / "MT_Free" / "Imgs").glob("*.jpg"))[0]
    t = root / "test"
    _put_image(bad.with_suffix(".jpg"), t / "10000.png", side=None)
    _put_mask(bad.with_suffix(".png"), t / "10000_GT.png", side=None)
    _put_image(free, t / "10001.png", side=None)
    h, w = cv2.imread(str(free)).shape[:2]
    _put_mask(None, t / "10001_GT.png", empty=True, shape=(h, w))
    return root


def make_mtd(root: Path) -> Path:
    bad = MTD / "MT_Blowhole" / "Imgs" / "exp1_num_108889"
    free = sorted((MTD / "MT_Free" / "Imgs").glob("*.jpg"))[0]
    _put_image(bad.with_suffix(".jpg"), root / "MT_Blowhole" / "Imgs" / (bad.name + ".jpg"), side=None)
    _put_mask(bad.with_suffix(".png"), root / "MT_Blowhole" / "Imgs" / (bad.name + ".png"), side=None)
    _put_image(free, root / "MT_Free" / "Imgs" / free.name, side=None)
    return root


def make_folder(root: Path) -> Path:
    _put_image(HAZELNUT / "good.jpg", root / "good" / "good.jpg")
    _put_image(HAZELNUT / "crack.jpg", root / "bad" / "crack.jpg")
    _put_mask(HAZELNUT / "crack_mask.jpg", root / "masks" / "crack.png")
    return root


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("*/maps/*.npz"))}


# ---------------------------------------------------------------------------------------------
# one run per dataset kind (first run + resumed run), shared by the tests of this module


class Runs:
    def __init__(self, tmp_factory, models):
        self.tmp = tmp_factory
        self.models = models
        self.sets = tiny_config_overrides(models) + FAST
        self.cache: dict[str, dict] = {}
        self._models = None  # one set of loaded models for the in-process runs

    def pipeline(self, cfg):
        from saa.pipeline import SAAPipeline

        if self._models is None:
            self._models = SAAPipeline(cfg).load_models()
        return self._models

    def _record(self, kind, out, first, second, before, after):
        self.cache[kind] = dict(out=out, first=first, second=second, mtimes_before=before, mtimes_after=after)
        return self.cache[kind]

    def get(self, kind: str) -> dict:
        if kind in self.cache:
            return self.cache[kind]
        base = self.tmp.mktemp(kind)
        out = base / "out"
        if kind == "mvtec":
            # the real run script, in a subprocess, for the first run
            data = make_mvtec(base / "data")
            cmd = [sys.executable, str(REPO / "run_MVTec.py"), "--data-root", str(data), "--out", str(out),
                   "--no-progress"] + [a for s in self.sets for a in ("--set", s)]
            proc = subprocess.run(cmd, cwd=str(base), capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "mean" in proc.stdout and str(out) in proc.stdout, proc.stdout
            first = json.loads((out / "metrics.json").read_text())
            first["_stdout"] = proc.stdout
            before = _mtimes(out)
            cfg = load_config(REPO / "configs" / "mvtec.yaml", self.sets)
            second = evaluate_run(cfg, out, data_root=data, progress=False)
            return self._record(kind, out, first, second, before, _mtimes(out))
        if kind == "folder":
            # `saa run` (the CLI) in-process, on the mvtec config turned into a folder dataset
            from saa.cli import main

            data = make_folder(base / "data")
            argv = ["-q", "run", str(REPO / "configs" / "mvtec.yaml"), "--out", str(out), "--no-progress",
                    "--set", "dataset.kind=folder", "--set", f"dataset.root={data}",
                    "--set", "dataset.options.normal_dir=good", "--set", "dataset.options.defect_dirs=[bad]",
                    "--set", "dataset.options.mask_dir=masks", "--set", "dataset.options.category=hazelnut"]
            argv += [a for s in self.sets for a in ("--set", s)]
            assert main(argv) == 0
            first = json.loads((out / "metrics.json").read_text())
            before = _mtimes(out)
            assert main(argv) == 0
            second = json.loads((out / "metrics.json").read_text())
            return self._record(kind, out, first, second, before, _mtimes(out))
        make, config = {
            "visa_public": (make_visa_public, "visa_public.yaml"),
            "visa_challenge": (make_visa_challenge, "visa_challenge.yaml"),
            "ksdd2": (make_ksdd2, "ksdd2.yaml"),
            "mtd": (make_mtd, "mtd.yaml"),
        }[kind]
        data = make(base / "data")
        cfg = load_config(REPO / "configs" / config, self.sets)
        first = evaluate_run(cfg, out, data_root=data, progress=False, pipeline=self.pipeline(cfg))
        before = _mtimes(out)
        second = evaluate_run(cfg, out, data_root=data, progress=False)  # fresh: loads no model
        return self._record(kind, out, first, second, before, _mtimes(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_models):
    return Runs(tmp_path_factory, tiny_models)


EXPECTED = {
    # kind: (categories, images per category, labelled)
    "mvtec": ({"bottle": 3}, True),
    "visa_public": ({"pcb1": 2}, True),
    "visa_challenge": ({"pcb1": 1, "pcb2": 1}, False),
    "ksdd2": ({"ksdd2": 2}, True),
    "mtd": ({"mtd": 2}, True),
    "folder": ({"hazelnut": 2}, True),
}


def _check_tables(out: Path, cats: dict[str, int], labelled: bool) -> None:
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    assert [r["category"] for r in rows] == [*cats, "mean"]
    assert [int(r["images"]) for r in rows] == [*cats.values(), sum(cats.values())]
    for r in rows:
        for k in METRIC_KEYS:
            v = r[k]
            if v == "n/a":
                continue
            assert labelled, f"unlabelled set has a value: {r}"
            assert v == f"{float(v):.2f}" and 0.0 <= float(v) <= 100.0, r
    if labelled:  # image AUROC is defined (both classes present)
        assert all(r["image_auroc"] != "n/a" for r in rows)
    md = (out / "metrics.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(cats) + 1
    for cat in cats:
        assert any(ln.startswith(f"| {cat} |") for ln in table)
    assert table[-1].startswith("| **mean** |")
    assert load_config(out / "config.yaml").dataset.kind  # the resolved config reads back


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_run_writes_tables_and_resumes(runs, kind):
    r = runs.get(kind)
    cats, labelled = EXPECTED[kind]
    out, first, second = r["out"], r["first"], r["second"]
    _check_tables(out, cats, labelled)
    assert list(first["categories"]) == list(cats)
    assert first["labelled"] is labelled
    for cat, n in cats.items():
        info = first["categories"][cat]
        assert info["counts"]["images"] == n
        assert info["computed"] == n and info["reused"] == 0
        maps = sorted((out / cat / "maps").glob("*.npz"))
        assert len(maps) == n
        for p in maps:
            with np.load(p) as z:
                assert z["map"].dtype == np.float32 and z["map"].shape == (400, 400)
                assert float(z["image_score"]) == pytest.approx(float(z["map"].max()))
            assert json.loads(p.with_name(p.name[:-4] + ".json").read_text())["candidates"] is not None
        for k in METRIC_KEYS:
            v = info["metrics"][k]
            assert v is None or 0.0 <= v <= 100.0
            if not labelled:
                assert v is None
    # the second run recomputed nothing, touched no per-image file and gives the same numbers
    assert second["totals"]["computed"] == 0
    assert second["totals"]["reused"] == sum(cats.values())
    assert all(second["categories"][c]["computed"] == 0 for c in cats)
    assert r["mtimes_after"] == r["mtimes_before"] and len(r["mtimes_before"]) == sum(cats.values())
    for c in cats:
        assert second["categories"][c]["metrics"] == first["categories"][c]["metrics"]
    assert second["mean"] == first["mean"]


def test_mvtec_run_script_output(runs):
    r = runs.get("mvtec")
    assert "bottle" in r["first"]["_stdout"] and "3 computed" in r["first"]["_stdout"]
    scores = list(csv.DictReader((r["out"] / "bottle" / "scores.csv").open()))
    assert [s["key"] for s in scores] == ["broken_large/000", "contamination/000", "good/000"]
    assert all(0.0 <= float(s["image_score"]) <= 1.0 for s in scores)
    # every pixel metric is defined with real masks
    assert all(r["first"]["categories"]["bottle"]["metrics"][k] is not None for k in METRIC_KEYS)


def test_visa_challenge_vand_tree(runs):
    r = runs.get("visa_challenge")
    vand_root = r["out"] / "vand"
    assert r["first"]["vand"] == {"root": str(vand_root), "experiment": "visa_challenge"}
    for cat, stem in CHALLENGE_STEMS.items():
        base = vand_root / "visa_challenge" / "0shot" / "0" / cat / "Unknown"
        txt = base / "classification" / f"{stem}.txt"
        npz = base / "segmentation" / f"{stem}.npz"
        assert txt.is_file() and npz.is_file(), sorted(map(str, base.rglob("*")))
        text = txt.read_text()
        assert len(text.split(".")[1]) == 5 and 0.0 <= float(text) <= 1.0
        with np.load(npz) as z:
            assert z.files == ["img"]
            assert z["img"].dtype == np.uint8 and z["img"].shape == (400, 400)
        assert V.category_stems(vand_root, cat) == [stem]
    assert not list(vand_root.rglob("*.tmp"))
    assert (r["out"] / "metrics.md").read_text().count("n/a") >= 8


# ---------------------------------------------------------------------------------------------
# unit tests: per-image files, normalisation, resizing, tables, VAND writer, errors


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


def test_fingerprint_tracks_what_changes_maps():
    cfg = load_config(REPO / "configs" / "mvtec.yaml")
    from saa.methods.saa_plus import config_fingerprint  # (was re-exported by saa.evaluator)

    fp = config_fingerprint(cfg, "bottle")
    assert fp == config_fingerprint(load_config(REPO / "configs" / "mvtec.yaml", ["models.device=cuda"]), "bottle")
    assert fp != config_fingerprint(load_config(REPO / "configs" / "mvtec.yaml", ["out_size=256"]), "bottle")
    assert fp != config_fingerprint(load_config(REPO / "configs" / "mvtec.yaml", ["preset=paper"]), "bottle")
    assert fp != config_fingerprint(load_config(REPO / "configs" / "mvtec.yaml", ["categories.bottle.k_mask=3"]), "bottle")
    assert fp != config_fingerprint(cfg, "cable")


def test_category_maps_joint_normalisation():
    """category_maps_and_scale (the one entry point left of the old evaluation_maps / category_maps):
    joint normalisation over the category, constant maps zeroed, bicubic resize first."""
    a = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    b = np.array([[1.0, 1.0], [1.0, 2.0]], np.float32)
    maps, scores, _, _ = category_maps_and_scale([a, b], 2)  # no resize: exact
    np.testing.assert_allclose(maps[0], a / 4.0)
    np.testing.assert_allclose(maps[1], b / 4.0)
    np.testing.assert_allclose(scores, [1.0, 0.5])
    # constant maps (max == min): all zeros, no NaN
    maps, scores, _, _ = category_maps_and_scale([np.full((3, 3), 0.7, np.float32)] * 2, 3)
    assert not maps.any() and np.array_equal(scores, [0.0, 0.0])
    # resized maps: bicubic first, then normalised: the category stays within [0, 1], max exactly 1
    rng = np.random.default_rng(0)
    raw = [rng.random((8, 8)).astype(np.float32) * 3 for _ in range(3)]
    maps, scores, _, _ = category_maps_and_scale(raw, 20)
    assert maps.shape == (3, 20, 20) and maps.dtype == np.float32
    assert maps.min() == 0.0 and maps.max() == 1.0
    np.testing.assert_array_equal(scores, maps.reshape(3, -1).max(1))
    up = cv2.resize(raw[0], (20, 20), interpolation=cv2.INTER_CUBIC)
    assert np.corrcoef(up.ravel(), maps[0].ravel())[0, 1] > 0.9999


def test_resize_masks_nearest():
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    out = resize_masks([m, m.astype(np.uint8) * 255], 8)
    assert out.dtype == bool and out.shape == (2, 8, 8)
    assert out[0, :4, :4].all() and not out[0, 4:, :].any() and not out[0, :, 4:].any()
    assert np.array_equal(out[0], out[1])


def test_mean_and_tables():
    per = {"a": {k: 50.0 for k in METRIC_KEYS}, "b": {k: None for k in METRIC_KEYS}}
    per["b"]["image_auroc"] = 70.0
    mean = mean_metrics(per)
    assert mean["image_auroc"] == 60.0 and mean["pixel_ap"] == 50.0
    assert mean_metrics({"a": {k: None for k in METRIC_KEYS}})["aupro"] is None
    result = {"categories": {c: {"metrics": v, "counts": {"images": 3}} for c, v in per.items()}, "mean": mean}
    rows = list(csv.reader(io.StringIO(format_table(result, "csv"))))
    assert rows[0] == ["category", "images", *METRIC_KEYS]
    assert rows[1][:3] == ["a", "3", "50.00"] and rows[2][2:4] == ["70.00", "n/a"]
    assert rows[3][:4] == ["mean", "6", "60.00", "50.00"]
    text = format_table(result, "text")
    assert "n/a" in text and text.splitlines()[-1].startswith("mean")
    assert format_table(result, "md").splitlines()[-1].startswith("| **mean** |")


def test_vand_writer(tmp_path):
    m = np.zeros((400, 400), np.float32)
    m[10, 10], m[20, 20], m[30, 30] = 1.0, 0.5, 0.2
    txt, npz = V.write_vand_image(tmp_path, "pcb1", "000-a.b", m, 0.123456)
    assert txt == tmp_path / "visa_challenge/0shot/0/pcb1/Unknown/classification/000-a.b.txt"
    assert npz == tmp_path / "visa_challenge/0shot/0/pcb1/Unknown/segmentation/000-a.b.npz"
    assert txt.read_text() == "0.12346"
    with np.load(npz) as z:
        assert z.files == ["img"]
        img = z["img"]
    assert img.dtype == np.uint8 and img.shape == (400, 400)
    assert (img[10, 10], img[20, 20], img[30, 30], img[0, 0]) == (255, 128, 51, 0)
    # other sizes are resized to 400; scores clipped to [0, 1]
    V.write_vand_category(tmp_path, "pcb2", ["x-1", "y.2.z"], [np.ones((64, 64)), np.zeros((100, 50))],
                          [1.0000001, -1e-9], experiment="exp")
    s, seg = V.read_vand_image(tmp_path, "pcb2", "x-1", experiment="exp")
    assert s == 1.0 and seg.shape == (400, 400) and (seg == 255).all()
    assert (tmp_path / "exp/0shot/0/pcb2/Unknown/classification/y.2.z.txt").read_text() == "0.00000"
    assert V.category_stems(tmp_path, "pcb2", "exp") == ["x-1", "y.2.z"]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    with pytest.raises(ValueError):
        V.write_vand_image(tmp_path, "pcb1", "a/b", m, 0.5)
    with pytest.raises(ValueError):
        V.write_vand_image(tmp_path, "pcb1", "c", m, float("nan"))
    with pytest.raises(ValueError, match="duplicate"):
        V.write_vand_category(tmp_path, "pcb1", ["d", "d"], [m, m], [0.1, 0.2])


def test_eval_size_option():
    base = REPO / "configs" / "mvtec.yaml"
    assert eval_size_of(load_config(base)) == 400
    assert eval_size_of(load_config(base, ["dataset.options.eval_size=256"])) == 256
    for bad in ("full", "0", "2.5", "true"):
        with pytest.raises(ConfigError, match="eval_size"):
            eval_size_of(load_config(base, [f"dataset.options.eval_size={bad}"]))
    assert split_dataset_options({"eval_size": 3, "split": "train"}) == ({"split": "train"}, {"eval_size": 3})


def test_unknown_categories_are_clear_errors(tmp_path):
    data = tmp_path / "data"
    _put_image(BOTTLE / "test" / "good" / "000.png", data / "bottle" / "test" / "good" / "000.png")
    cfg = load_config(REPO / "configs" / "mvtec.yaml")
    with pytest.raises(ConfigError, match="bottel.*bottle"):
        evaluate_run(cfg, tmp_path / "out", categories=["bottel"], data_root=data, progress=False)
    with pytest.raises(DatasetError, match="cable.*present: bottle"):
        evaluate_run(cfg, tmp_path / "out", categories=["cable"], data_root=data, progress=False)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_run_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "run_KSDD2.py"), "--data-root", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "run_KSDD2.py: error:" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prepare_commands(tmp_path, capsys):
    from saa.cli import main

    raw = tmp_path / "raw"
    img = raw / "pcb1" / "Data" / "Images"
    _put_image(PCB / "pcb1" / "defective.jpg", img / "Anomaly" / "000.JPG")
    _put_image(PCB / "pcb1" / "defective.jpg", img / "Normal" / "0000.JPG")
    _put_image(PCB / "pcb1" / "defective.jpg", img / "Normal" / "0001.JPG")
    _put_mask(PCB / "pcb1" / "ground_truth.jpg", raw / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png")
    (raw / "split_csv").mkdir()
    (raw / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n"
        "pcb1,train,normal,pcb1/Data/Images/Normal/0001.JPG,\n"
        "pcb1,test,normal,pcb1/Data/Images/Normal/0000.JPG,\n"
        "pcb1,test,anomaly,pcb1/Data/Images/Anomaly/000.JPG,pcb1/Data/Masks/Anomaly/000.png\n")
    out = tmp_path / "1cls"
    assert main(["prepare", "visa", "--raw", str(raw), "--out", str(out)]) == 0
    assert "1 test/bad" in capsys.readouterr().out
    assert (out / "pcb1" / "ground_truth" / "bad" / "000.png").is_file()
    assert main(["prepare", "check", "visa_public", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pcb1: 2 images (1 normal, 1 anomalous), 1 masks" in text
    assert main(["prepare", "check", "ksdd2", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err

"""Benchmark runs (saa.run.runner: evaluate_run, ``saa run``, the run_*.py scripts) of every dataset
kind, the run named by its method, categories that are not plain names, unknown categories.

End-to-end tests run the real pipeline with the tiny random-weight models on tiny trees of real
images (tests/conftest.py; resized small; Grounding DINO still works at 800 px, so each image costs
seconds). Each dataset kind is run once per module (fixture ``runs``): a first run, then a second run
in the same output folder that must reuse every per-image file. Tests then check the written files.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saa import vand as V
from saa.cli import main
from saa.config import config_from_dict, load_config
from saa.errors import ConfigError, DatasetError, SaaError
from saa.evaluation import METRIC_KEYS
from saa.results import ResultStore
from saa.run import evaluate_run
from saa.testing import tiny_config_overrides

from tests.conftest import BOTTLE, CHALLENGE_STEMS, FAST, REPO

MVTEC = REPO / "configs" / "mvtec.yaml"


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("*/maps/*.npz"))}


# ---------------------------------------------------------------------------------------------
# one run per dataset kind (first run + resumed run), shared by the tests of this module


class Runs:
    def __init__(self, tmp_factory, models, trees):
        self.tmp = tmp_factory
        self.models = models
        self.trees = trees  # the dataset_trees fixture
        self.sets = tiny_config_overrides(models) + FAST
        self.cache: dict[str, dict] = {}
        self._models = None  # one set of loaded models for the in-process runs

    def pipeline(self, cfg):
        from saa.methods.saa_plus import SAAPipeline

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
            data = self.trees["mvtec"][0](base / "data")
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

            data = self.trees["folder"][0](base / "data")
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
        make, config = self.trees[kind]
        data = make(base / "data")
        cfg = load_config(REPO / "configs" / config, self.sets)
        first = evaluate_run(cfg, out, data_root=data, progress=False, pipeline=self.pipeline(cfg))
        before = _mtimes(out)
        second = evaluate_run(cfg, out, data_root=data, progress=False)  # fresh: loads no model
        return self._record(kind, out, first, second, before, _mtimes(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_models, dataset_trees):
    return Runs(tmp_path_factory, tiny_models, dataset_trees)


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
    assert r["first"]["vand"] == {"root": str(vand_root), "experiment": "visa_challenge", "track": "0shot/0"}
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


def test_unknown_categories_are_clear_errors(tmp_path, put_image):
    data = tmp_path / "data"
    put_image(BOTTLE / "test" / "good" / "000.png", data / "bottle" / "test" / "good" / "000.png")
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


# ---------------------------------------------------------------------------------------------
# the method is named where users read it, and config.yaml reproduces the run


def test_lite_run_is_named_everywhere_and_its_reproduce_line_reruns_it(tmp_path, capsys, make_mvtec, no_weights):
    data = make_mvtec(tmp_path / "data")
    cfg = load_config(MVTEC, no_weights(tmp_path))
    out = tmp_path / "run"
    first = evaluate_run(cfg, out, data_root=data, progress=False, method="lite")
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


@pytest.mark.parametrize("name", ["..", "../../x", "/tmp/saa_abs_category", "a/b", "."])
def test_a_category_that_is_not_a_plain_name_writes_nothing_outside_out(tmp_path, name, put_image):
    data = tmp_path / "data" / "parts"
    put_image(BOTTLE / "test" / "good" / "000.png", data / "good" / "a.png")
    put_image(BOTTLE / "test" / "broken_large" / "000.png", data / "bad" / "b.png")
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
        evaluate_run(cfg, out, progress=False, print_table=False, method="lite")
    after = {p for p in tmp_path.rglob("*")}
    assert after - before <= {tmp_path / "work", out}, sorted(map(str, after - before))
    assert not Path("/tmp/saa_abs_category").exists()
    with pytest.raises(SaaError, match="outside"):
        ResultStore(out).path("..", "elsewhere.txt")

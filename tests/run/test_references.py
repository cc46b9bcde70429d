"""`saa run --bank` / `--references` / `--k-shot` (saa/run/references.py, through the runner and the
engine): every test image scored against a bank of good parts (no pass 1 over the test set), so the
run's maps equal `saa predict --bank` maps of the same images; a k-shot run uses exactly the
seed-listed training images and says so (results folder, metrics.json, metrics.md); resume reuses,
another bank recomputes; a bank run's thresholds are not taken for images scored together; torchrun
shards share the bank; one-line refusals. lite on small real bottle images (one torch thread)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.bank import ReferenceBank
from saa.cli import main
from saa.config import config_from_dict
from saa.naming import stored_stem

from tests.conftest import BOTTLE, REPO, SHARED, free_port

SEEDS = SHARED / "fewshot" / "seeds_mvtec"
#: k = 5 of seed runs 0 and 1 (shared/fewshot/seeds_mvtec/bottle)
RUN0 = ["013", "048", "053", "142", "161"]
RUN1 = ["048", "081", "102", "119", "156"]
TEST = ["good/000.png", "good/002.png", "broken_large/000.png", "contamination/003.png", "broken_small/004.png"]
SIDE = 64
LITE = ["--method", "lite", "--set", "method_options.lite.size=64", "--set", "out_size=32",
        "--set", "dataset.options.eval_size=64", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def small(src: Path, dst: Path, gray: bool = False) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    im = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    interp = cv2.INTER_NEAREST if gray else cv2.INTER_AREA
    cv2.imwrite(str(dst), cv2.resize(im, (SIDE, SIDE), interpolation=interp))
    return dst


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """An MVTec tree of bottle: the seed-listed train/good images of runs 0 and 1 (and two more), five test
    images with their masks; and a config of it."""
    root = tmp_path_factory.mktemp("refs")
    data = root / "mvtec"
    for stem in sorted(set(RUN0 + RUN1 + ["010", "019"])):
        small(BOTTLE / "train" / "good" / f"{stem}.png", data / "bottle" / "train" / "good" / f"{stem}.png")
    for rel in TEST:
        small(BOTTLE / "test" / rel, data / "bottle" / "test" / rel)
        if not rel.startswith("good"):
            m = rel.replace(".png", "_mask.png")
            small(BOTTLE / "ground_truth" / m, data / "bottle" / "ground_truth" / m, gray=True)
    cfg = config_from_dict({"out_size": 32, "dataset": {"kind": "mvtec", "root": str(data)},
                            "categories": {"bottle": {"object": "bottle,", "n_objects": 1, "k_mask": 1,
                                                      "area_ratio": 0.5}}})
    (root / "mvtec.yaml").write_text(cfg.to_yaml())
    return root


def run(tree: Path, *args) -> int:
    return main(["-q", "run", str(tree / "mvtec.yaml"), *LITE, *map(str, args)])


def stored_maps(out: Path) -> dict[str, np.ndarray]:
    """The run's stored maps by stored stem (``good/000`` -> ``good__000``)."""
    return {p.stem: np.load(p)["map"] for p in sorted((out / "bottle" / "maps").glob("*.npz"))}


def test_k_shot_run_uses_the_seed_listed_images_and_says_so(tree, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(tree, "--k-shot", 5, "--seed-run", 1, "--seeds", SEEDS) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "results" / "mvtec-5shot-run1"  # the default folder says k and the seed run
    data = json.loads((out / "metrics.json").read_text())
    assert data["references"] == {"mode": "k_shot", "k": 5, "seed_run": 1, "seeds": str(SEEDS)}
    ref = data["categories"]["bottle"]["references"]
    assert ref["ids"] == RUN1 and ref["images"] == [f"{s}.png" for s in RUN1] and (ref["k"], ref["seed_run"]) == (5, 1)
    assert [Path(p).parent for p in ref["paths"]] == [tree / "mvtec" / "bottle" / "train" / "good"] * 5
    bank = ReferenceBank.open(out / "bottle" / "bank")
    assert ref["bank_id"] == bank.bank_id and [r.name for r in bank.manifest.images] == ref["images"]
    assert bank.manifest.kshot.ids == RUN1 and ref["seed_file"].endswith("bottle/selected_samples_per_run.txt")
    assert data["categories"]["bottle"]["map_fingerprint"].endswith("+bank-" + bank.bank_id[:16])
    assert "features_computed" not in data["categories"]["bottle"]  # no pass 1 over the test images
    assert not (out / "bottle" / "cross_features").exists()
    assert "k = 5, seed run 1: " + " ".join(RUN1) in printed and "saa predict" in printed and "--bank" in printed
    md = (out / "metrics.md").read_text()
    assert "reference bank of good parts" in md and " ".join(RUN1) in md and bank.bank_id[:12] in md
    assert f"--k-shot 5 --seed-run 1 --seeds {SEEDS}" in (out / "config.yaml").read_text()  # Reproduce line
    # resume: nothing recomputed, the same bank reused
    assert run(tree, "--k-shot", 5, "--seed-run", 1, "--seeds", SEEDS) == 0
    assert json.loads((out / "metrics.json").read_text())["totals"]["reused"] == len(TEST)
    assert ReferenceBank.open(out / "bottle" / "bank").manifest.created == bank.manifest.created
    # another seed run into the same folder: another bank, every map recomputed
    before = stored_maps(out)
    assert run(tree, "--k-shot", 5, "--seed-run", 0, "--seeds", SEEDS, "--out", out) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["totals"]["computed"] == len(TEST) and again["categories"]["bottle"]["references"]["ids"] == RUN0
    assert ReferenceBank.open(out / "bottle" / "bank").manifest.kshot.ids == RUN0
    after = stored_maps(out)
    assert before.keys() == after.keys() and not all(np.array_equal(before[k], after[k]) for k in before)


def test_run_maps_equal_predict_bank_maps(tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tree, "--k-shot", 5, "--seed-run", 0, "--seeds", SEEDS, "--out", out) == 0
    maps = stored_maps(out)
    bank = out / "bottle" / "bank"
    test = tree / "mvtec" / "bottle" / "test"
    for batch in (TEST, TEST[2:3]):  # all the test images in one call, and one alone
        pred = tmp_path / f"pred{len(batch)}"
        assert main(["-q", "predict", "--config", str(out / "config.yaml"), "--category", "bottle", "--bank", str(bank),
                     "--out", str(pred), "--panels", "none", *[str(test / rel) for rel in batch]]) == 0
        with open(pred / "predictions.csv", newline="") as f:
            stems = {r["image"]: r["stem"] for r in csv.DictReader(f)}  # two files named 000.png: 000, 000_1
        assert len(stems) == len(batch)
        for rel in batch:
            got = np.load(pred / (stems[str(test / rel)] + ".npy"))
            assert np.array_equal(got, maps[stored_stem(rel[:-4])]), rel
    # the run's thresholds are on the scale of bank-scored maps: predict --thresholds-from refuses them
    capsys.readouterr()
    assert main(["predict", "--config", str(out / "config.yaml"), "--category", "bottle", "--thresholds-from", str(out),
                 "--out", str(tmp_path / "x"), str(test / TEST[0])]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"saa predict --bank {bank}" in err


def test_references_folder_and_bank_runs(tree, tmp_path, capsys):
    good = tree / "mvtec" / "bottle" / "train" / "good"
    refs = tmp_path / "refs"
    for stem in RUN0:
        small(good / f"{stem}.png", refs / "bottle" / f"{stem}.png")
    out = tmp_path / "byref"
    assert run(tree, "--references", refs, "--out", out) == 0
    data = json.loads((out / "metrics.json").read_text())
    ref = data["categories"]["bottle"]["references"]
    assert ref["mode"] == "references" and ref["images"] == [f"{s}.png" for s in RUN0] and "k" not in ref
    # the same images as a k-shot run: the same bank, the same maps
    kshot = tmp_path / "kshot"
    assert run(tree, "--k-shot", 5, "--seed-run", 0, "--seeds", SEEDS, "--out", kshot) == 0
    assert json.loads((kshot / "metrics.json").read_text())["categories"]["bottle"]["references"]["bank_id"] == \
        ref["bank_id"]
    m1, m2 = stored_maps(out), stored_maps(kshot)
    assert m1.keys() == m2.keys() and all(np.array_equal(m1[k], m2[k]) for k in m1)
    # --bank: an existing bank (the run is its category), and a folder of banks per category
    assert run(tree, "--bank", kshot / "bottle" / "bank", "--out", tmp_path / "given") == 0
    m3 = stored_maps(tmp_path / "given")
    assert all(np.array_equal(m1[k], m3[k]) for k in m1)
    banks = tmp_path / "banks"
    banks.mkdir()
    os.symlink(kshot / "bottle" / "bank", banks / "bottle")
    assert run(tree, "--bank", banks, "--out", tmp_path / "folder") == 0
    assert json.loads((tmp_path / "folder" / "metrics.json").read_text())["categories"]["bottle"]["references"][
        "bank"] == str(banks / "bottle")


def test_refusals_are_one_line(tree, tmp_path, capsys):
    good = tree / "mvtec" / "bottle" / "train" / "good"
    assert main(["-q", "bank", "build", "--config", str(tree / "mvtec.yaml"), *LITE[:-1], "--category", "bottle",
                 "--out", str(tmp_path / "bank"), str(good)]) == 0
    capsys.readouterr()

    def refused(*args, base=LITE) -> str:
        out = tmp_path / "never"
        assert main(["run", str(tree / "mvtec.yaml"), *base, "--out", str(out), *map(str, args)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        assert not out.exists()
        return err

    assert "--seeds" in refused("--k-shot", 5)  # mvtec ships no seed lists
    assert "give one source of references" in refused("--k-shot", 5, "--bank", tmp_path / "bank")
    assert "add --k-shot" in refused("--seed-run", 1)
    assert "names image '999'" in refused("--k-shot", 1, "--seeds", _seed_list(tmp_path, "0-1: 999\n"))
    assert "no seed list for run 7" in refused("--k-shot", 5, "--seed-run", 7, "--seeds", SEEDS)
    assert "method_options.lite.size = 64" in refused("--bank", tmp_path / "bank", "--set",
                                                      "method_options.lite.size=96")
    assert "compares no images" in refused("--k-shot", 5, "--seeds", SEEDS, base=["--no-progress"])
    assert "no such folder" in refused("--references", tmp_path / "refs_none")
    (tmp_path / "empty" / "bottle").mkdir(parents=True)
    assert "no image file" in refused("--references", tmp_path / "empty")


def _seed_list(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "seeds" / "bottle" / "selected_samples_per_run.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return tmp_path / "seeds"


def test_torchrun_shards_share_the_bank(tree, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SAA_DIST_BACKEND="gloo")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    args = [str(REPO / "run_MVTec.py"), "--data-root", str(tree / "mvtec"), *LITE, "--k-shot", "5", "--seed-run", "1",
            "--seeds", str(SEEDS), "-q"]
    one, two = tmp_path / "one", tmp_path / "two"
    r = subprocess.run([sys.executable, *args, "--out", str(one)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", free_port(), *args, "--out", str(two)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "5 images (5 computed by 2 processes, 0 reused)" in r.stdout, r.stdout
    a, b = json.loads((one / "metrics.json").read_text()), json.loads((two / "metrics.json").read_text())
    assert a["categories"]["bottle"]["references"]["bank_id"] == b["categories"]["bottle"]["references"]["bank_id"]
    assert a["categories"]["bottle"]["metrics"] == b["categories"]["bottle"]["metrics"]
    ma, mb = stored_maps(one), stored_maps(two)
    assert len(ma) == len(TEST) and ma.keys() == mb.keys() and all(np.array_equal(ma[k], mb[k]) for k in ma)

"""`run_VAND_workshop.py --k-shot K` (saa.commands.run.main_for with the few-shot submission): the
challenge root read as the ``vand_kshot`` layout, one run per seed run its lists name for K, each test
image scored against exactly the listed good images, and ONE submission tree
``OUT/vand/visa_challenge/<K>shot/<run>/<cat>/Unknown/{classification,segmentation}/`` whose files
have the challenge's names, formats and value ranges. lite on small real images (one torch thread)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.bank import ReferenceBank
from saa.commands.run import main_for

from tests.conftest import BOTTLE, PCB, REPO

SCRIPT_CONFIG = REPO / "configs" / "visa_challenge.yaml"
LITE = ["--method", "lite", "--set", "method_options.lite.size=64", "--set", "out_size=32", "--no-progress", "-q"]
#: test stems of each category (one with '-' and dots, as the challenge has)
STEMS = ["000-a.b", "0001"]
SEEDS = "0-1: 0002\n0-2: 0000 0003\n1-1: 0001\n1-2: 0001 0002\n2-1: 0003\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def put(src: Path, dst: Path, side: int = 64) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), cv2.resize(cv2.imread(str(src)), (side, side), interpolation=cv2.INTER_AREA))


@pytest.fixture()
def vand_kshot_tree(tmp_path) -> Path:
    """Test/<cat>/Images (two PCB images), Train/<cat>/Images (four good images), the seed lists."""
    root = tmp_path / "vand"
    goods = sorted((BOTTLE / "train" / "good").glob("*.png"))[:4]
    for cat in ("pcb1", "pcb2"):
        put(PCB / cat / "defective.jpg", root / "Test" / cat / "Images" / f"{STEMS[0]}.JPG")
        put(PCB / "pcb1" / "defective.jpg", root / "Test" / cat / "Images" / f"{STEMS[1]}.JPG", side=48)
        for i, g in enumerate(goods):
            put(g, root / "Train" / cat / "Images" / f"{i:04d}.JPG")
        (root / "Train" / cat / "selected_samples_per_run.txt").write_text(SEEDS)
    return root


def test_few_shot_submission_has_the_challenge_layout(vand_kshot_tree, tmp_path, capsys):
    out = tmp_path / "sub"
    assert main_for(SCRIPT_CONFIG, ["--data-root", str(vand_kshot_tree), "--k-shot", "2", "--out", str(out), *LITE],
                    prog="run_VAND_workshop.py", fewshot_submission=True) == 0
    printed = capsys.readouterr().out
    assert "seed run(s) 0, 1" in printed  # the runs the lists name for k = 2 (run 2 has k = 1 only)
    tree = out / "vand" / "visa_challenge"
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    want = sorted(f"2shot/{run}/{cat}/Unknown/{kind}/{stem}.{ext}" for run in (0, 1) for cat in ("pcb1", "pcb2")
                  for stem in STEMS for kind, ext in (("classification", "txt"), ("segmentation", "npz")))
    assert files == want
    for p in tree.rglob("*.txt"):
        text = p.read_text()
        assert len(text.split(".")[1]) == 5 and 0.0 <= float(text) <= 1.0, (p, text)
    for p in tree.rglob("*.npz"):
        with np.load(p) as z:
            assert z.files == ["img"] and z["img"].dtype == np.uint8 and z["img"].shape == (400, 400)
    # per seed run: its own run folder, a bank of exactly the listed images, the record in metrics.json
    for run, ids in ((0, ["0000", "0003"]), (1, ["0001", "0002"])):
        data = json.loads((out / f"run{run}" / "metrics.json").read_text())
        assert data["dataset"]["kind"] == "vand_kshot" and data["vand"]["track"] == f"2shot/{run}"
        assert data["references"]["k"] == 2 and data["references"]["seed_run"] == run
        for cat in ("pcb1", "pcb2"):
            ref = data["categories"][cat]["references"]
            assert ref["ids"] == ids and ref["images"] == [f"{i}.JPG" for i in ids]
            assert [r.name for r in ReferenceBank.open(out / f"run{run}" / cat / "bank").manifest.images] == ref["images"]
    # the two seed runs are scored against other references: other maps
    a = np.load(tree / "2shot/0/pcb1/Unknown/segmentation/0001.npz")["img"]
    b = np.load(tree / "2shot/1/pcb1/Unknown/segmentation/0001.npz")["img"]
    assert not np.array_equal(a, b)
    # one seed run only
    assert main_for(SCRIPT_CONFIG, ["--data-root", str(vand_kshot_tree), "--k-shot", "1", "--seed-run", "2", "--out",
                                    str(out), *LITE], prog="run_VAND_workshop.py", fewshot_submission=True) == 0
    assert sorted(p.name for p in (tree / "1shot").iterdir()) == ["2"]


def test_seed_lists_that_disagree_or_lack_k_are_one_line(vand_kshot_tree, tmp_path, capsys):
    def refused(*args) -> str:
        assert main_for(SCRIPT_CONFIG, ["--data-root", str(vand_kshot_tree), "--out", str(tmp_path / "x"), *LITE,
                                        *args], prog="run_VAND_workshop.py", fewshot_submission=True) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        return err

    assert "names no seed run with k = 5" in refused("--k-shot", "5")
    (vand_kshot_tree / "Train" / "pcb2" / "selected_samples_per_run.txt").write_text("0-2: 0000 0001\n")
    assert "choose one with --seed-run" in refused("--k-shot", "2")
    assert not (tmp_path / "x").exists()

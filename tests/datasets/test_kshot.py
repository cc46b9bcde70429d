"""K-shot references: the seed lists of the SAA+ authors (``"{run}-{k}: id id ..."``) pick exactly
the listed good training images (real bottle lists and files; a small tree for the errors), the
``vand_kshot`` layout (VAND 2023 few-shot track) is read, and ``saa bank build --from-dataset
--k-shot K --seed-run R`` builds a bank of exactly those images and records them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.bank import ReferenceBank
from saa.cli import main
from saa.config import config_from_dict
from saa.datasets import build_dataset, read_seed_lists, select_k_shot
from saa.errors import DatasetError

from bank_toys import ToyRefs  # noqa: E402  (tests/support; the `toy` fixture: tests/conftest.py)

from tests.conftest import BOTTLE, REPO, SHARED  # noqa: E402,F401

REAL = BOTTLE.parent
SEEDS = SHARED / "fewshot" / "seeds_mvtec"


def image(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = np.full((16, 16, 3), value, np.uint8)
    im[value % 16, :, 0] = 255
    cv2.imwrite(str(path), im)
    return path


def seed_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def mvtec_tree(tmp_path) -> Path:
    root = tmp_path / "mvtec"
    for i in range(12):
        image(root / "part" / "train" / "good" / f"{i:03d}.png", 20 + 10 * i)
    image(root / "part" / "test" / "good" / "100.png", 7)
    seed_file(tmp_path / "seeds" / "part" / "selected_samples_per_run.txt",
              "0-1: 003\n0-2: 011 002\n1-1: 007\n1-2: 000 010\n\n")
    return root


def test_real_bottle_seed_lists_pick_exactly_the_listed_images():
    ds = build_dataset("mvtec", REAL)
    train = ds.train_samples("bottle")
    lists = read_seed_lists(SEEDS / "bottle" / "selected_samples_per_run.txt")
    assert sorted(lists.lists) == [(r, k) for r in (0, 1, 2) for k in (1, 5, 10)]
    for (run, k), ids in lists.lists.items():
        sel = select_k_shot(train, SEEDS, k, run, "bottle")
        assert [s.image_path.stem for s in sel.samples] == list(ids) == list(sel.ids)
        assert all(s.image_path.parent == REAL / "bottle" / "train" / "good" and s.label == 0 for s in sel.samples)
        assert (sel.k, sel.run) == (k, run) and sel.seed_file == SEEDS / "bottle" / "selected_samples_per_run.txt"
    assert [s.image_path.name for s in select_k_shot(train, SEEDS, 5, 0, "bottle").samples] == \
        ["013.png", "048.png", "053.png", "142.png", "161.png"]


def test_seed_list_errors_are_one_line(mvtec_tree, tmp_path):
    train = build_dataset("mvtec", mvtec_tree).train_samples("part")
    seeds = tmp_path / "seeds"
    sel = select_k_shot(train, seeds, 2, 0, "part")
    assert [s.image_path.name for s in sel.samples] == ["011.png", "002.png"]  # the list's order

    def error(text=None, k=1, run=0, where=None) -> str:
        path = where or seed_file(tmp_path / "other" / "list.txt", text)
        with pytest.raises(DatasetError) as e:
            select_k_shot(train, path, k, run, "part")
        assert "\n" not in str(e.value)
        return str(e.value)

    msg = error("0-1: 003\n0-2: 011 099\n", k=2)
    assert "line 2 (0-2) names image '099'" in msg and "train/good has no image with that file stem" in msg
    assert "list.txt" in msg
    assert "no seed list for run 3 with k = 1" in error("0-1: 003\n", run=3)
    assert "line 1 is not '<run>-<k>: id id ...'" in error("k=1: 003\n")
    assert "names 1 image(s), not 2" in error("0-2: 003\n", k=2)
    assert "lists run 0 with k = 1 again (first on line 1)" in error("0-1: 003\n0-1: 004\n")
    assert "names image '003' twice" in error("0-2: 003 003\n", k=2)
    assert "seed list is empty" in error("\n\n")
    assert "not found" in error(where=tmp_path / "missing.txt")
    assert "no seed list of category 'part'" in error(where=tmp_path / "other")
    # two training files with one stem
    image(mvtec_tree / "part" / "train" / "good" / "003.jpg", 3)
    train = build_dataset("mvtec", mvtec_tree).train_samples("part")
    assert "2 files with that stem" in error("0-1: 003\n")


def _vand_tree(root: Path) -> Path:
    for cat in ("capsules", "pcb1"):
        for n in ("a", "b"):
            image(root / "Test" / cat / "Images" / f"{n}.JPG", 50)
        for i in range(6):
            image(root / "Train" / cat / "Images" / f"{i:04d}.JPG", 30 + 20 * i)
    seed_file(root / "Train" / "capsules" / "selected_samples_per_run.txt", "0-1: 0004\n0-2: 0001 0005\n")
    return root


def test_vand_kshot_layout_is_read(tmp_path):
    root = _vand_tree(tmp_path / "vand")
    ds = build_dataset("vand_kshot", root)
    assert ds.categories() == ["capsules", "pcb1"] and ds.has_train_images and not ds.has_masks
    test = ds.samples("capsules")
    assert [s.image_path.name for s in test] == ["a.JPG", "b.JPG"] and all(s.label is None for s in test)
    train = ds.train_samples("capsules")
    assert [s.image_path.name for s in train] == [f"{i:04d}.JPG" for i in range(6)]
    assert ds.seed_file("capsules") == root / "Train" / "capsules" / "selected_samples_per_run.txt"
    assert [s.image_path.name for s in ds.k_shot("capsules", 2, 0).samples] == ["0001.JPG", "0005.JPG"]
    with pytest.raises(DatasetError, match="seed list not found"):
        ds.k_shot("pcb1", 1, 0)
    # the seed lists in a folder of their own (option seeds, relative to the root)
    seed_file(root / "seeds" / "pcb1" / "selected_samples_per_run.txt", "0-1: 0002\n")
    ds = build_dataset("vand_kshot", root, seeds="seeds")
    assert [s.image_path.name for s in ds.k_shot("pcb1", 1, 0).samples] == ["0002.JPG"]
    # a category without references
    image(root / "Test" / "candle" / "Images" / "c.JPG")
    with pytest.raises(DatasetError, match="no good training images"):
        build_dataset("vand_kshot", root).train_samples("candle")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="expected layout"):
        build_dataset("vand_kshot", tmp_path / "empty").categories()


def _config(tmp_path: Path, kind: str, root: Path, category: str) -> Path:
    cfg = config_from_dict({"out_size": 16, "dataset": {"kind": kind, "root": str(root)},
                            "categories": {category: {"object": "x,", "n_objects": 1, "k_mask": 1, "area_ratio": 0.5}}})
    path = tmp_path / f"{kind}.yaml"
    path.write_text(cfg.to_yaml())
    return path


def test_bank_build_k_shot_uses_exactly_the_listed_images(mvtec_tree, tmp_path, toy, capsys):  # noqa: F811
    cfg = _config(tmp_path, "mvtec", mvtec_tree, "part")
    base = ["bank", "build", "--config", str(cfg), "--method", ToyRefs.name, "--category", "part", "--no-progress",
            "--from-dataset"]
    out = tmp_path / "bank"
    assert main(base + ["--out", str(out), "--k-shot", "2", "--seed-run", "1", "--seeds", str(tmp_path / "seeds")]) == 0
    printed = capsys.readouterr().out
    assert "k-shot: k = 2, seed run 1: 000 010" in printed
    m = ReferenceBank.open(out).manifest
    assert [r.name for r in m.images] == ["000.png", "010.png"]
    assert (m.kshot.k, m.kshot.run, m.kshot.ids, m.kshot.dataset_kind) == (2, 1, ["000", "010"], "mvtec")
    assert m.kshot.seed_file.endswith("part/selected_samples_per_run.txt") and len(m.kshot.seed_file_sha256) == 64
    # every good training image without --k-shot
    assert main(base + ["--out", str(tmp_path / "all")]) == 0
    assert len(ReferenceBank.open(tmp_path / "all").manifest.images) == 12
    # mvtec needs the seed lists named; a listed image that is missing stops the build
    assert main(base + ["--out", str(tmp_path / "x"), "--k-shot", "1"]) == 1
    assert "--k-shot needs --seeds" in capsys.readouterr().err
    (mvtec_tree / "part" / "train" / "good" / "007.png").unlink()
    assert main(base + ["--out", str(tmp_path / "x"), "--k-shot", "1", "--seed-run", "1",
                        "--seeds", str(tmp_path / "seeds")]) == 1
    err = capsys.readouterr().err.strip()
    assert "names image '007'" in err and err.count("\n") == 0 and not (tmp_path / "x").exists()


def test_bank_build_k_shot_from_the_vand_kshot_layout(tmp_path, toy):  # noqa: F811
    root = _vand_tree(tmp_path / "vand")
    cfg = _config(tmp_path, "vand_kshot", root, "capsules")
    assert main(["bank", "build", "--config", str(cfg), "--method", ToyRefs.name, "--category", "capsules",
                 "--no-progress", "--from-dataset", "--k-shot", "1", "--out", str(tmp_path / "bank")]) == 0
    m = ReferenceBank.open(tmp_path / "bank").manifest
    assert [r.name for r in m.images] == ["0004.JPG"] and m.kshot.ids == ["0004"]
    assert m.kshot.dataset_kind == "vand_kshot"

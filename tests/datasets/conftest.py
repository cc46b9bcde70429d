"""Fixtures of the dataset tests: tiny trees in each layout (real MVTec bottle, VisA and MTD files
where they exist, small synthetic images elsewhere) and the writers they are made with."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.datasets import AnomalyDataset

from tests.conftest import BOTTLE, MTD, PCB, REALDATA, VISA_CSV


@pytest.fixture(scope="session")
def realdata() -> Path:
    # CI has this folder: a missing one is a broken checkout, not a reason to skip
    assert REALDATA.is_dir(), f"real sample data folder missing: {REALDATA}"
    for p in (BOTTLE, MTD, PCB, VISA_CSV):
        assert p.exists(), f"real sample data missing: {p}"
    return REALDATA


def write_image(path: Path, h: int = 6, w: int = 8, value: int = 128, grey: bool = False) -> Path:
    """A small synthetic image, encoded by the (case-insensitive) extension of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w) if grey else (h, w, 3), value, np.uint8)
    ok, buf = cv2.imencode(path.suffix.lower(), arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def write_mask(path: Path, h: int = 6, w: int = 8, on: int = 255, box=(1, 3, 2, 5)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    if box is not None:
        y0, y1, x0, x1 = box
        m[y0:y1, x0:x1] = on
    assert cv2.imwrite(str(path), m)
    return path


def add_strays(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "._000.png").write_bytes(b"\0\5\26\7")  # macOS resource fork with an image extension
    (folder / "subdir_not_an_image").mkdir(exist_ok=True)


def assert_dataset_error(excinfo, *fragments, layout: AnomalyDataset | None = None) -> str:
    msg = str(excinfo.value)
    for frag in fragments:
        assert str(frag) in msg, f"{frag!r} not in error message:\n{msg}"
    if layout is not None:
        assert layout.expected_layout() in msg, f"expected layout missing from:\n{msg}"
    return msg


def _pick_rows(n_per: dict) -> list[dict]:
    """A few real rows of 1cls.csv: {(object, split, label): count}."""
    picked, seen = [], {}
    with VISA_CSV.open(newline="") as f:
        for row in csv.DictReader(f):
            k = (row["object"], row["split"], row["label"])
            if seen.get(k, 0) < n_per.get(k, 0):
                seen[k] = seen.get(k, 0) + 1
                picked.append(row)
    assert seen == n_per, seen
    return picked


def write_csv(path: Path, rows: list[dict], columns=("object", "split", "label", "image", "mask")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture()
def visa_raw(tmp_path, realdata) -> tuple[Path, list[dict]]:
    raw = tmp_path / "VisA_20220922"
    rows = _pick_rows({
        ("candle", "train", "normal"): 2, ("candle", "test", "normal"): 1, ("candle", "test", "anomaly"): 2,
        ("pcb1", "train", "normal"): 1, ("pcb1", "test", "normal"): 1, ("pcb1", "test", "anomaly"): 1,
        ("pcb3", "test", "normal"): 1, ("pcb3", "test", "anomaly"): 1,
    })
    for row in rows:
        img = raw / row["image"]
        if row["label"] == "anomaly" and row["object"] in ("pcb1", "pcb3"):
            # a real VisA pcb photo + its mask, stored like the raw release ({0,1} PNG mask)
            img.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PCB / row["object"] / "defective.jpg", img)
            gt = cv2.imread(str(PCB / row["object"] / "ground_truth.jpg"), cv2.IMREAD_GRAYSCALE)
            (raw / row["mask"]).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(raw / row["mask"]), (gt > 127).astype(np.uint8))
        else:
            write_image(img, 12, 16, value=100)
            if row["mask"]:
                write_mask(raw / row["mask"], 12, 16, on=1)
    write_csv(raw / "split_csv" / "1cls.csv", rows)
    return raw, rows


@pytest.fixture()
def mvtec_root(tmp_path, realdata) -> Path:
    root = tmp_path / "mvtec"
    picks = {"good": ["000", "002", "004"], "broken_large": ["000", "003"], "contamination": ["000", "003"]}
    for defect, ids in picks.items():
        for i in ids:
            dst = root / "bottle" / "test" / defect / f"{i}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(BOTTLE / "test" / defect / f"{i}.png", dst)
            if defect != "good":
                mdst = root / "bottle" / "ground_truth" / defect / f"{i}_mask.png"
                mdst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(BOTTLE / "ground_truth" / defect / f"{i}_mask.png", mdst)
    for name in ("license.txt", "readme.txt"):
        shutil.copyfile(BOTTLE / name, root / "bottle" / name)
    (root / "readme.txt").write_text("top-level readme")
    add_strays(root / "bottle" / "test" / "good")
    add_strays(root / "bottle" / "test" / "broken_large")
    return root


@pytest.fixture()
def ksdd2_root(tmp_path) -> Path:
    root = tmp_path / "KSDD2"
    # test: 2 bad, 2 good; train: 1 bad, 2 good
    for split, ids in (("test", {"20000": True, "20001": False, "20002": True, "20003": False}),
                       ("train", {"10000": False, "10001": True, "10002": False})):
        for i, bad in ids.items():
            write_image(root / split / f"{i}.png", 10, 12)
            write_mask(root / split / f"{i}_GT.png", 10, 12, box=(2, 4, 2, 5) if bad else None)
        add_strays(root / split)
    return root


@pytest.fixture()
def mtd_root(tmp_path, realdata) -> Path:
    root = tmp_path / "MTD"
    picks = {
        "MT_Free": ["exp0_num_743", "exp1_num_116949"],
        "MT_Blowhole": sorted(p.stem for p in (MTD / "MT_Blowhole" / "Imgs").glob("*.jpg"))[:2],
        "MT_Uneven": ["exp3_num_45042"] + sorted(
            p.stem for p in (MTD / "MT_Uneven" / "Imgs").glob("*.jpg") if "45042" not in p.stem)[:1],
    }
    for cls, stems in picks.items():
        for stem in stems:
            for ext in (".jpg", ".png"):
                dst = root / cls / "Imgs" / f"{stem}{ext}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(MTD / cls / "Imgs" / f"{stem}{ext}", dst)
        add_strays(root / cls / "Imgs")
    (root / "README.md").write_text("readme")
    return root


# the writers, handed to tests by name
@pytest.fixture(scope="session", name="write_image")
def _write_image_fixture():
    return write_image


@pytest.fixture(scope="session", name="write_mask")
def _write_mask_fixture():
    return write_mask


@pytest.fixture(scope="session", name="add_strays")
def _add_strays_fixture():
    return add_strays


@pytest.fixture(scope="session", name="assert_dataset_error")
def _assert_dataset_error_fixture():
    return assert_dataset_error


@pytest.fixture(scope="session", name="write_csv")
def _write_csv_fixture():
    return write_csv

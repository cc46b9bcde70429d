"""``saa prepare visa`` (saa.datasets.visa_prepare) from real split rows and real pcb samples, and
dataset kind ``visa_public`` reading the prepared tree, with hints for a raw release given instead."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.datasets import build_dataset, prepare_visa
from saa.errors import DatasetError
from saa.image_io import read_rgb

from tests.conftest import VISA_CSV


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_visa_tree_masks_and_idempotence(tmp_path, visa_raw):
    raw, rows = visa_raw
    out = tmp_path / "visa" / "1cls"
    counts = prepare_visa(raw, out)
    assert counts == {"categories": 3, "train_good": 3, "test_good": 3, "test_bad": 4, "masks": 4,
                      "written": 14, "unchanged": 0}
    tree = _tree(out)
    for row in rows:
        src = raw / row["image"]
        sub = {"train": "train/good", "test": "test/good" if row["label"] == "normal" else "test/bad"}[row["split"]]
        rel = f"{row['object']}/{sub}/{src.name}"
        assert tree[rel] == src.read_bytes()  # copied, not re-encoded
        if row["label"] == "anomaly":
            mrel = f"{row['object']}/ground_truth/bad/{src.stem}.png"
            m = cv2.imread(str(out / mrel), cv2.IMREAD_UNCHANGED)
            assert m.dtype == np.uint8 and m.ndim == 2
            assert set(np.unique(m).tolist()) == {0, 255}
            assert np.array_equal(m > 0, cv2.imread(str(raw / row["mask"]), cv2.IMREAD_GRAYSCALE) > 0)
    assert len(tree) == 14

    again = prepare_visa(raw, out, split_csv=raw / "split_csv")  # csv folder form
    assert again["written"] == 0 and again["unchanged"] == 14
    assert _tree(out) == tree

    # a damaged output file is repaired on the next run
    victim = next(p for p in (out / "candle" / "ground_truth" / "bad").iterdir())
    victim.write_bytes(b"broken")
    third = prepare_visa(raw, out, split_csv=raw / "split_csv" / "1cls.csv")
    assert third["written"] == 1
    assert _tree(out) == tree


def test_visa_public_reads_prepared_tree(tmp_path, visa_raw):
    raw, _ = visa_raw
    out = tmp_path / "1cls"
    prepare_visa(raw, out)
    ds = build_dataset("visa_public", out)
    assert ds.categories() == ["candle", "pcb1", "pcb3"]
    pcb3 = ds.samples("pcb3")
    assert [(s.defect_type, s.label) for s in pcb3] == [("bad", 1), ("good", 0)]
    bad = pcb3[0]
    assert bad.mask_path == out / "pcb3" / "ground_truth" / "bad" / f"{bad.stem}.png"
    img = read_rgb(bad.image_path)
    assert img.shape == (960, 1562, 3)
    m = ds.load_mask(bad, img.shape[:2])
    assert m.any() and m.sum() < m.size // 10
    assert not ds.load_mask(pcb3[1], (960, 1562)).any()
    candle = ds.samples("candle")
    assert sum(s.label for s in candle) == 2 and len(candle) == 3  # train/good is not test data


def test_visa_public_hints_for_raw_release_and_1cls_parent(tmp_path, visa_raw, assert_dataset_error):
    raw, _ = visa_raw
    ds = build_dataset("visa_public", raw)
    with pytest.raises(DatasetError) as ei:
        ds.categories()
    assert_dataset_error(ei, raw, "raw VisA", "prepare", layout=ds)
    prepare_visa(raw, tmp_path / "v" / "1cls")
    ds = build_dataset("visa_public", tmp_path / "v")
    with pytest.raises(DatasetError) as ei:
        ds.categories()
    assert_dataset_error(ei, tmp_path / "v" / "1cls", layout=ds)


def test_prepare_visa_errors(tmp_path, visa_raw, assert_dataset_error, write_csv):
    raw, rows = visa_raw
    out = tmp_path / "out"
    bad_csv = write_csv(tmp_path / "bad.csv", rows, columns=("object", "split", "image", "mask"))
    with pytest.raises(DatasetError) as ei:
        prepare_visa(raw, out, split_csv=bad_csv)
    assert_dataset_error(ei, bad_csv, "label", "missing column")
    assert not out.exists()

    (raw / rows[-1]["image"]).unlink()
    with pytest.raises(DatasetError) as ei:
        prepare_visa(raw, out)
    assert_dataset_error(ei, raw / rows[-1]["image"], "not found")
    assert not out.exists()  # everything is checked before anything is written

    anomaly = next(r for r in rows if r["label"] == "anomaly")
    (raw / anomaly["mask"]).unlink()
    with pytest.raises(DatasetError) as ei:
        prepare_visa(raw, out, categories=[anomaly["object"]])
    assert_dataset_error(ei, raw / anomaly["mask"])

    with pytest.raises(DatasetError) as ei:
        prepare_visa(tmp_path / "no_raw", out)
    assert_dataset_error(ei, tmp_path / "no_raw")
    with pytest.raises(DatasetError) as ei:
        prepare_visa(raw, out, split_csv=tmp_path / "missing.csv")
    assert_dataset_error(ei, tmp_path / "missing.csv")


def test_real_split_csv_parses(realdata, tmp_path, assert_dataset_error):
    # the real file has the columns prepare_visa needs; with none of its images present it names one
    with pytest.raises(DatasetError) as ei:
        prepare_visa(tmp_path, tmp_path / "out", split_csv=VISA_CSV)
    assert_dataset_error(ei, tmp_path / "candle" / "Data" / "Images" / "Normal")

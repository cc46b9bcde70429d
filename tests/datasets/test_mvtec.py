"""Dataset layouts (SPEC §4): every kind on a tiny tree, with real files where they exist."""
from __future__ import annotations

import csv
import shutil
from dataclasses import FrozenInstanceError
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.datasets import (
    DATASETS,
    AnomalyDataset,
    Sample,
    build_dataset,
    prepare_visa,
    register_dataset,
    validate_dataset,
)
from saa.errors import DatasetError
from saa.image_io import read_mask, read_rgb

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
MVTEC_BOTTLE = REALDATA / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection" / "bottle"
MTD_REAL = REALDATA / "mtd__abin24_Magnetic-tile-defect-datasets"
VISA_PCB = REALDATA / "visa_pcb_samples__rezafarjad_industrial-pcb-anomaly-detection"
VISA_CSV = REALDATA / "visa_split_csv__amazon-science_spot-diff" / "split_csv" / "1cls.csv"


@pytest.fixture(scope="session")
def realdata() -> Path:
    # CI has this folder: a missing one is a broken checkout, not a reason to skip
    assert REALDATA.is_dir(), f"real sample data folder missing: {REALDATA}"
    for p in (MVTEC_BOTTLE, MTD_REAL, VISA_PCB, VISA_CSV):
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


# ----------------------------------------------------------------------------------------------
# Sample, registry


def test_sample_stem_key_and_frozen(tmp_path):
    s = Sample(tmp_path / "a" / "001-x.png", None, 0, "good", "bottle")
    assert s.stem == "001-x"
    assert s.key == "good/001-x"
    assert not s.is_anomalous
    with pytest.raises(FrozenInstanceError):
        s.label = 1  # type: ignore[misc]


def test_registry_has_all_kinds_and_unknown_kind_lists_them(tmp_path):
    assert {"mvtec", "visa_public", "visa_challenge", "ksdd2", "mtd", "folder"} <= set(DATASETS)
    for name, cls in DATASETS.items():
        assert cls.name == name and issubclass(cls, AnomalyDataset)
    with pytest.raises(DatasetError) as ei:
        build_dataset("mvtec_ad", tmp_path)
    assert_dataset_error(ei, "mvtec_ad", "mvtec", "visa_public", "visa_challenge", "ksdd2", "mtd", "folder")


def test_unknown_option_is_an_error(tmp_path):
    with pytest.raises(DatasetError) as ei:
        build_dataset("ksdd2", tmp_path, spilt="train")
    assert_dataset_error(ei, "spilt", "split")


def test_register_custom_dataset(tmp_path):
    @register_dataset("_test_custom")
    class Custom(AnomalyDataset):
        def _find_categories(self):
            return ["x"]

        def _collect(self, category):
            return [Sample(p, None, 0, "good", category) for p in sorted(self.root.glob("*.png"))]

        def expected_layout(self):
            return "<root>/*.png"

    try:
        write_image(tmp_path / "b.png")
        write_image(tmp_path / "a.png")
        ds = build_dataset("_test_custom", tmp_path)
        assert isinstance(ds, Custom) and ds.name == "_test_custom"
        assert [s.stem for s in ds.samples("x")] == ["a", "b"]
    finally:
        DATASETS.pop("_test_custom", None)


# ----------------------------------------------------------------------------------------------
# MVTec-AD (real bottle files)


@pytest.fixture()
def mvtec_root(tmp_path, realdata) -> Path:
    root = tmp_path / "mvtec"
    picks = {"good": ["000", "002", "004"], "broken_large": ["000", "003"], "contamination": ["000", "003"]}
    for defect, ids in picks.items():
        for i in ids:
            dst = root / "bottle" / "test" / defect / f"{i}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(MVTEC_BOTTLE / "test" / defect / f"{i}.png", dst)
            if defect != "good":
                mdst = root / "bottle" / "ground_truth" / defect / f"{i}_mask.png"
                mdst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(MVTEC_BOTTLE / "ground_truth" / defect / f"{i}_mask.png", mdst)
    for name in ("license.txt", "readme.txt"):
        shutil.copyfile(MVTEC_BOTTLE / name, root / "bottle" / name)
    (root / "readme.txt").write_text("top-level readme")
    add_strays(root / "bottle" / "test" / "good")
    add_strays(root / "bottle" / "test" / "broken_large")
    return root


def test_mvtec_real_bottle_samples(mvtec_root):
    ds = build_dataset("mvtec", mvtec_root)
    assert ds.categories() == ["bottle"]
    samples = ds.samples("bottle")
    assert len(samples) == 7
    assert [s.key for s in samples] == [
        "broken_large/000", "broken_large/003", "contamination/000", "contamination/003",
        "good/000", "good/002", "good/004",
    ]
    assert all(s.category == "bottle" for s in samples)
    for s in samples:
        if s.defect_type == "good":
            assert s.label == 0 and s.mask_path is None
        else:
            assert s.label == 1
            assert s.mask_path == mvtec_root / "bottle" / "ground_truth" / s.defect_type / f"{s.stem}_mask.png"
    assert len({s.key for s in samples}) == len(samples)


def test_mvtec_load_mask_real(mvtec_root):
    ds = build_dataset("mvtec", mvtec_root)
    samples = ds.samples("bottle")
    bad = next(s for s in samples if s.label == 1)
    img = read_rgb(bad.image_path)
    assert img.shape == (900, 900, 3)
    m = ds.load_mask(bad, img.shape[:2])
    assert m.dtype == bool and m.shape == (900, 900) and m.any() and not m.all()
    assert np.array_equal(m, read_mask(bad.mask_path))
    good = next(s for s in samples if s.label == 0)
    z = ds.load_mask(good, (900, 900))
    assert z.dtype == bool and z.shape == (900, 900) and not z.any()
    assert ds.load_mask(good, (3, 5, 3)).shape == (3, 5)


def test_load_mask_shape_mismatch_names_both_files(mvtec_root):
    ds = build_dataset("mvtec", mvtec_root)
    bad = next(s for s in ds.samples("bottle") if s.label == 1)
    with pytest.raises(DatasetError) as ei:
        ds.load_mask(bad, (450, 900))
    assert_dataset_error(ei, bad.image_path, bad.mask_path, "900x900", "900x450")


def test_mvtec_order_is_deterministic_and_categories_in_spec_order(tmp_path):
    root = tmp_path / "mv"
    # created in reverse / scrambled order on purpose
    for cat in ("zipper", "my_part", "bottle", "carpet"):
        for name in ("10.png", "2.png", "1.png"):
            write_image(root / cat / "test" / "good" / name)
    (root / "not_a_category").mkdir()  # no test/ folder
    ds = build_dataset("mvtec", root)
    assert ds.categories() == ["carpet", "bottle", "zipper", "my_part"]
    first = [s.stem for s in ds.samples("bottle")]
    assert first == ["1", "2", "10"]
    assert ds.samples("bottle") == build_dataset("mvtec", root).samples("bottle")


def test_mvtec_case_insensitive_extensions_and_same_stem_keys(tmp_path):
    root = tmp_path / "mv"
    write_image(root / "screw" / "test" / "good" / "000.PNG")
    write_image(root / "screw" / "test" / "good" / "001.png")
    write_image(root / "screw" / "test" / "good" / "002.bmp")
    write_image(root / "screw" / "test" / "thread_side" / "000.png")
    write_image(root / "screw" / "test" / "thread_top" / "000.JPG")
    write_mask(root / "screw" / "ground_truth" / "thread_side" / "000_mask.png")
    write_mask(root / "screw" / "ground_truth" / "thread_top" / "000_mask.png")
    add_strays(root / "screw" / "test" / "good")
    ds = build_dataset("mvtec", root)
    samples = ds.samples("screw")
    assert [s.image_path.name for s in samples] == ["000.PNG", "001.png", "002.bmp", "000.png", "000.JPG"]
    keys = [s.key for s in samples]
    assert keys == ["good/000", "good/001", "good/002", "thread_side/000", "thread_top/000"]
    assert len(set(keys)) == len(keys)


def test_mvtec_duplicate_stem_in_one_folder_is_an_error(tmp_path):
    root = tmp_path / "mv"
    write_image(root / "pill" / "test" / "good" / "000.png")
    write_image(root / "pill" / "test" / "good" / "000.jpg")
    ds = build_dataset("mvtec", root)
    with pytest.raises(DatasetError) as ei:
        ds.samples("pill")
    assert_dataset_error(ei, "000.png", "000.jpg", "good/000", layout=ds)


def test_mvtec_errors(tmp_path, mvtec_root):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError) as ei:
        build_dataset("mvtec", missing)
    layout = build_dataset("mvtec", mvtec_root)
    assert_dataset_error(ei, missing, "does not exist", layout=layout)

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DatasetError) as ei:
        build_dataset("mvtec", a_file)
    assert_dataset_error(ei, a_file, "not a folder", layout=layout)

    ds = build_dataset("mvtec", mvtec_root)
    with pytest.raises(DatasetError) as ei:
        ds.samples("cable")
    assert_dataset_error(ei, "'cable'", "bottle", mvtec_root, layout=ds)

    # root one level too deep
    deep = build_dataset("mvtec", mvtec_root / "bottle")
    with pytest.raises(DatasetError) as ei:
        deep.categories()
    assert_dataset_error(ei, mvtec_root / "bottle", "parent", layout=ds)

    # category folder without test/
    (mvtec_root / "cable" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError) as ei:
        ds.samples("cable")
    assert_dataset_error(ei, mvtec_root / "cable", "no test/ folder", layout=ds)

    # empty category: a test/ folder without images
    add_strays(mvtec_root / "grid" / "test" / "good")
    with pytest.raises(DatasetError) as ei:
        ds.samples("grid")
    assert_dataset_error(ei, "'grid'", "no test images", mvtec_root / "grid" / "test", layout=ds)

    # anomalous image without its mask
    write_image(mvtec_root / "bottle" / "test" / "broken_small" / "007.png")
    ds2 = build_dataset("mvtec", mvtec_root)
    with pytest.raises(DatasetError) as ei:
        ds2.samples("bottle")
    assert_dataset_error(
        ei, mvtec_root / "bottle" / "test" / "broken_small" / "007.png",
        mvtec_root / "bottle" / "ground_truth" / "broken_small" / "007_mask.png", layout=ds2,
    )


def test_mvtec_empty_root(tmp_path):
    ds = build_dataset("mvtec", tmp_path)
    with pytest.raises(DatasetError) as ei:
        ds.categories()
    assert_dataset_error(ei, tmp_path, "no mvtec category", layout=ds)


# ----------------------------------------------------------------------------------------------
# VisA: prepare_visa from real split rows + real pcb samples, then visa_public


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


def _write_csv(path: Path, rows: list[dict], columns=("object", "split", "label", "image", "mask")) -> Path:
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
            shutil.copyfile(VISA_PCB / row["object"] / "defective.jpg", img)
            gt = cv2.imread(str(VISA_PCB / row["object"] / "ground_truth.jpg"), cv2.IMREAD_GRAYSCALE)
            (raw / row["mask"]).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(raw / row["mask"]), (gt > 127).astype(np.uint8))
        else:
            write_image(img, 12, 16, value=100)
            if row["mask"]:
                write_mask(raw / row["mask"], 12, 16, on=1)
    _write_csv(raw / "split_csv" / "1cls.csv", rows)
    return raw, rows


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


def test_visa_public_hints_for_raw_release_and_1cls_parent(tmp_path, visa_raw):
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


def test_prepare_visa_errors(tmp_path, visa_raw):
    raw, rows = visa_raw
    out = tmp_path / "out"
    bad_csv = _write_csv(tmp_path / "bad.csv", rows, columns=("object", "split", "image", "mask"))
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


def test_real_split_csv_parses(realdata, tmp_path):
    # the real file has the columns prepare_visa needs; with none of its images present it names one
    with pytest.raises(DatasetError) as ei:
        prepare_visa(tmp_path, tmp_path / "out", split_csv=VISA_CSV)
    assert_dataset_error(ei, tmp_path / "candle" / "Data" / "Images" / "Normal")


# ----------------------------------------------------------------------------------------------
# VisA challenge


def test_visa_challenge(tmp_path):
    root = tmp_path / "VisA_20220922"
    for cat in ("pcb4", "candle"):
        for name in ("b-0002.JPG", "a-0001.jpg", "0010.png"):
            write_image(root / "Test" / cat / "Images" / name)
        add_strays(root / "Test" / cat / "Images")
    ds = build_dataset("visa_challenge", root)
    assert ds.categories() == ["candle", "pcb4"]
    assert not ds.has_masks
    samples = ds.samples("pcb4")
    assert [s.stem for s in samples] == ["0010", "a-0001", "b-0002"]
    assert all(s.label is None and s.mask_path is None and s.category == "pcb4" for s in samples)
    assert len({s.key for s in samples}) == 3
    assert not ds.load_mask(samples[0], (6, 8)).any()

    wrong = build_dataset("visa_challenge", root / "Test")
    with pytest.raises(DatasetError) as ei:
        wrong.categories()
    assert_dataset_error(ei, root / "Test", "parent", layout=ds)


# ----------------------------------------------------------------------------------------------
# KSDD2


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


def test_ksdd2_default_test_split_and_gt_labels(ksdd2_root):
    ds = build_dataset("ksdd2", ksdd2_root)
    assert ds.categories() == ["ksdd2"]
    samples = ds.samples("ksdd2")
    assert [(s.stem, s.label, s.defect_type) for s in samples] == [
        ("20000", 1, "bad"), ("20002", 1, "bad"), ("20001", 0, "good"), ("20003", 0, "good"),
    ]
    assert not any(s.stem.endswith("_GT") for s in samples)
    for s in samples:
        assert s.category == "ksdd2"
        if s.label:
            assert s.mask_path == ksdd2_root / "test" / f"{s.stem}_GT.png"
            assert ds.load_mask(s, (10, 12)).sum() == 6
        else:
            assert not ds.load_mask(s, (10, 12)).any()


def test_ksdd2_train_split_option(ksdd2_root):
    ds = build_dataset("ksdd2", ksdd2_root, split="train")
    samples = ds.samples("ksdd2")
    assert [(s.stem, s.label) for s in samples] == [("10001", 1), ("10000", 0), ("10002", 0)]
    assert all(s.image_path.parent == ksdd2_root / "train" for s in samples)


def test_ksdd2_errors(ksdd2_root, tmp_path):
    with pytest.raises(DatasetError) as ei:
        build_dataset("ksdd2", ksdd2_root, split="val")
    assert_dataset_error(ei, "'val'", "test", "train")

    (ksdd2_root / "test" / "20002_GT.png").unlink()
    ds = build_dataset("ksdd2", ksdd2_root)
    with pytest.raises(DatasetError) as ei:
        ds.samples("ksdd2")
    assert_dataset_error(ei, ksdd2_root / "test" / "20002.png", ksdd2_root / "test" / "20002_GT.png", layout=ds)

    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    ds = build_dataset("ksdd2", empty)
    with pytest.raises(DatasetError) as ei:
        ds.categories()
    assert_dataset_error(ei, empty / "test", layout=ds)
    with pytest.raises(DatasetError) as ei:
        build_dataset("ksdd2", empty, split="train").samples("ksdd2")
    assert_dataset_error(ei, "no test images", empty / "train", layout=ds)


# ----------------------------------------------------------------------------------------------
# MTD (real files)


@pytest.fixture()
def mtd_root(tmp_path, realdata) -> Path:
    root = tmp_path / "MTD"
    picks = {
        "MT_Free": ["exp0_num_743", "exp1_num_116949"],
        "MT_Blowhole": sorted(p.stem for p in (MTD_REAL / "MT_Blowhole" / "Imgs").glob("*.jpg"))[:2],
        "MT_Uneven": ["exp3_num_45042"] + sorted(
            p.stem for p in (MTD_REAL / "MT_Uneven" / "Imgs").glob("*.jpg") if "45042" not in p.stem)[:1],
    }
    for cls, stems in picks.items():
        for stem in stems:
            for ext in (".jpg", ".png"):
                dst = root / cls / "Imgs" / f"{stem}{ext}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(MTD_REAL / cls / "Imgs" / f"{stem}{ext}", dst)
        add_strays(root / cls / "Imgs")
    (root / "README.md").write_text("readme")
    return root


def test_mtd_real_samples(mtd_root):
    ds = build_dataset("mtd", mtd_root)
    assert ds.categories() == ["mtd"]
    samples = ds.samples("mtd")
    assert len(samples) == 6
    assert all(s.image_path.suffix == ".jpg" for s in samples)  # the pngs are masks
    assert all(s.category == "mtd" for s in samples)
    assert len({s.key for s in samples}) == 6
    free = [s for s in samples if s.defect_type == "MT_Free"]
    assert len(free) == 2 and all(s.label == 0 and s.mask_path is None for s in free)
    blow = [s for s in samples if s.defect_type == "MT_Blowhole"]
    assert all(s.label == 1 and s.mask_path == s.image_path.with_suffix(".png") for s in blow)
    for s in blow:
        h, w = read_rgb(s.image_path).shape[:2]
        m = ds.load_mask(s, (h, w))
        assert m.shape == (h, w) and m.any()
    for s in free:
        h, w = read_rgb(s.image_path).shape[:2]
        assert not ds.load_mask(s, (h, w)).any()
    # the real all-zero-mask MT_Uneven image counts as normal, like the authors' loader
    zero = next(s for s in samples if s.stem == "exp3_num_45042")
    assert zero.label == 0 and zero.defect_type == "MT_Uneven"


def test_mtd_label_from_folder_option(mtd_root):
    samples = build_dataset("mtd", mtd_root, label_from="folder").samples("mtd")
    assert [s.label for s in samples if s.defect_type != "MT_Free"] == [1, 1, 1, 1]
    with pytest.raises(DatasetError):
        build_dataset("mtd", mtd_root, label_from="guess")


def test_mtd_free_needs_no_mask_but_defects_do(mtd_root):
    for p in (mtd_root / "MT_Free" / "Imgs").glob("*.png"):
        p.unlink()
    ds = build_dataset("mtd", mtd_root)
    assert len(ds.samples("mtd")) == 6
    victim = next((mtd_root / "MT_Blowhole" / "Imgs").glob("exp*.png"))
    victim.unlink()
    ds = build_dataset("mtd", mtd_root)
    with pytest.raises(DatasetError) as ei:
        ds.samples("mtd")
    assert_dataset_error(ei, victim.with_suffix(".jpg"), victim, layout=ds)


def test_mtd_errors(tmp_path, mtd_root):
    ds = build_dataset("mtd", tmp_path / "MTD" / "MT_Free")
    with pytest.raises(DatasetError) as ei:
        ds.categories()
    assert_dataset_error(ei, tmp_path / "MTD" / "MT_Free", "class folder", layout=ds)
    with pytest.raises(DatasetError) as ei:
        ds.samples("bottle")
    assert_dataset_error(ei, layout=ds)


# ----------------------------------------------------------------------------------------------
# folder


@pytest.fixture()
def folder_root(tmp_path) -> Path:
    root = tmp_path / "my_parts"
    for name in ("n2.png", "n1.JPG", "n10.jpeg"):
        write_image(root / "ok" / name)
    write_image(root / "defects" / "scratch" / "s1.png")
    write_image(root / "defects" / "scratch" / "s2.PNG")
    write_image(root / "defects" / "dent" / "s1.bmp")  # same stem as a scratch image
    write_mask(root / "masks" / "scratch" / "s1_mask.png")
    write_mask(root / "masks" / "scratch" / "s2_mask.png")
    write_mask(root / "masks" / "s1_mask.png", box=(0, 2, 0, 2))  # flat fallback, used by dent/s1
    for d in ("ok", "defects/scratch", "defects/dent", "masks"):
        add_strays(root / d)
    return root


def test_folder_with_mask_dir_and_glob(folder_root):
    ds = build_dataset("folder", folder_root, normal_dir="ok", defect_dirs="defects/*",
                       mask_dir="masks", mask_suffix="_mask")
    assert ds.has_masks
    assert ds.categories() == ["my_parts"]
    samples = ds.samples("my_parts")
    assert [s.key for s in samples] == ["dent/s1", "good/n1", "good/n2", "good/n10", "scratch/s1", "scratch/s2"]
    by = {s.key: s for s in samples}
    assert by["scratch/s1"].mask_path == folder_root / "masks" / "scratch" / "s1_mask.png"
    assert by["dent/s1"].mask_path == folder_root / "masks" / "s1_mask.png"
    assert all(by[k].label == 0 and by[k].mask_path is None for k in ("good/n1", "good/n2", "good/n10"))
    assert ds.load_mask(by["dent/s1"], (6, 8)).sum() == 4


def test_folder_without_mask_dir_list_and_options(folder_root):
    ds = build_dataset("folder", folder_root, normal_dir="ok",
                       defect_dirs=["defects/scratch", str(folder_root / "defects" / "dent")],
                       extensions=["png", ".JPG"], category="widget")
    assert not ds.has_masks
    assert ds.categories() == ["widget"]
    samples = ds.samples("widget")
    # extensions filter: .bmp and .jpeg left out
    assert [s.key for s in samples] == ["good/n1", "good/n2", "scratch/s1", "scratch/s2"]
    assert all(s.category == "widget" and s.mask_path is None for s in samples)
    assert [s.label for s in samples] == [0, 0, 1, 1]
    assert not ds.load_mask(samples[-1], (6, 8)).any()
    only_defects = build_dataset("folder", folder_root, defect_dirs="defects/dent")
    assert [s.key for s in only_defects.samples("my_parts")] == ["dent/s1"]


def test_folder_errors(folder_root, tmp_path):
    with pytest.raises(DatasetError) as ei:
        build_dataset("folder", folder_root)
    assert_dataset_error(ei, "normal_dir", "defect_dirs")

    ds = build_dataset("folder", folder_root, normal_dir="good")
    with pytest.raises(DatasetError) as ei:
        ds.samples("my_parts")
    assert_dataset_error(ei, folder_root / "good", layout=ds)

    ds = build_dataset("folder", folder_root, normal_dir="ok", defect_dirs="nothing_*")
    with pytest.raises(DatasetError) as ei:
        ds.samples("my_parts")
    assert_dataset_error(ei, "nothing_*", folder_root, layout=ds)

    (folder_root / "masks" / "scratch" / "s2_mask.png").unlink()
    ds = build_dataset("folder", folder_root, defect_dirs="defects/*", mask_dir="masks", mask_suffix="_mask")
    with pytest.raises(DatasetError) as ei:
        ds.samples("my_parts")
    assert_dataset_error(ei, folder_root / "defects" / "scratch" / "s2.PNG",
                         folder_root / "masks" / "scratch" / "s2_mask.png", layout=ds)

    with pytest.raises(DatasetError) as ei:
        build_dataset("folder", tmp_path / "absent", normal_dir="ok")
    assert_dataset_error(ei, tmp_path / "absent", layout=ds)


# ----------------------------------------------------------------------------------------------
# validate_dataset


def test_validate_dataset_report(mvtec_root):
    lines = validate_dataset("mvtec", mvtec_root, check_sizes=True)
    text = "\n".join(lines)
    assert "1 categories present (bottle)" in text
    assert "bottle: 7 images (3 normal, 4 anomalous), 4 masks" in text
    assert "absent" in text and "carpet" in text


def test_validate_dataset_reports_problems(ksdd2_root, mvtec_root):
    lines = validate_dataset("ksdd2", ksdd2_root, split="train")
    assert any("ksdd2: 3 images (2 normal, 1 anomalous), 1 masks" in l for l in lines)

    # a mask of the wrong size
    m = mvtec_root / "bottle" / "ground_truth" / "contamination" / "003_mask.png"
    write_mask(m, 10, 10)
    with pytest.raises(DatasetError) as ei:
        validate_dataset("mvtec", mvtec_root, check_sizes=True)
    assert_dataset_error(ei, m, "900x900")
    with pytest.raises(DatasetError) as ei:
        validate_dataset("mvtec", mvtec_root, categories=["bottle", "cable"])
    assert_dataset_error(ei, "'cable'", "bottle: 7 images")

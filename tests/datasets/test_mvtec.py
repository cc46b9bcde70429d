"""Dataset kind ``mvtec`` (saa.datasets.mvtec, SPEC §4) on real bottle files: samples, masks, a
deterministic order, extensions in any case, the errors."""
from __future__ import annotations

import numpy as np
import pytest

from saa.datasets import build_dataset
from saa.errors import DatasetError
from saa.image_io import read_mask, read_rgb


# ----------------------------------------------------------------------------------------------
# MVTec-AD (real bottle files)


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


def test_load_mask_shape_mismatch_names_both_files(mvtec_root, assert_dataset_error):
    ds = build_dataset("mvtec", mvtec_root)
    bad = next(s for s in ds.samples("bottle") if s.label == 1)
    with pytest.raises(DatasetError) as ei:
        ds.load_mask(bad, (450, 900))
    assert_dataset_error(ei, bad.image_path, bad.mask_path, "900x900", "900x450")


def test_mvtec_order_is_deterministic_and_categories_in_spec_order(tmp_path, write_image):
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


def test_mvtec_case_insensitive_extensions_and_same_stem_keys(tmp_path, add_strays, write_image, write_mask):
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


def test_mvtec_duplicate_stem_in_one_folder_is_an_error(tmp_path, assert_dataset_error, write_image):
    root = tmp_path / "mv"
    write_image(root / "pill" / "test" / "good" / "000.png")
    write_image(root / "pill" / "test" / "good" / "000.jpg")
    ds = build_dataset("mvtec", root)
    with pytest.raises(DatasetError) as ei:
        ds.samples("pill")
    assert_dataset_error(ei, "000.png", "000.jpg", "good/000", layout=ds)


def test_mvtec_errors(tmp_path, mvtec_root, add_strays, assert_dataset_error, write_image):
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


def test_mvtec_empty_root(tmp_path, assert_dataset_error):
    ds = build_dataset("mvtec", tmp_path)
    with pytest.raises(DatasetError) as ei:
        ds.categories()
    assert_dataset_error(ei, tmp_path, "no mvtec category", layout=ds)

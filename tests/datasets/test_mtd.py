"""Dataset kind ``mtd`` (saa.datasets.mtd) on real magnetic-tile files: MT_Free normal, masks beside
the images, the label-from-folder option, the errors."""
from __future__ import annotations

import pytest

from saa.datasets import build_dataset
from saa.errors import DatasetError
from saa.image_io import read_rgb


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


def test_mtd_free_needs_no_mask_but_defects_do(mtd_root, assert_dataset_error):
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


def test_mtd_errors(tmp_path, mtd_root, assert_dataset_error):
    ds = build_dataset("mtd", tmp_path / "MTD" / "MT_Free")
    with pytest.raises(DatasetError) as ei:
        ds.categories()
    assert_dataset_error(ei, tmp_path / "MTD" / "MT_Free", "class folder", layout=ds)
    with pytest.raises(DatasetError) as ei:
        ds.samples("bottle")
    assert_dataset_error(ei, layout=ds)

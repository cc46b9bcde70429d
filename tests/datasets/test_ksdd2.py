"""Dataset kind ``ksdd2`` (saa.datasets.ksdd2): labels from the ground truth, the split option, the
errors naming what is missing."""
from __future__ import annotations

import pytest

from saa.datasets import build_dataset
from saa.errors import DatasetError


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


def test_ksdd2_errors(ksdd2_root, tmp_path, assert_dataset_error):
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

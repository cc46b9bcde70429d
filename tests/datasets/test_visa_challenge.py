"""Dataset kind ``visa_challenge`` (saa.datasets.visa_challenge): the VAND test set, no labels, no
masks."""
from __future__ import annotations

import pytest

from saa.datasets import build_dataset
from saa.errors import DatasetError


def test_visa_challenge(tmp_path, add_strays, assert_dataset_error, write_image):
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

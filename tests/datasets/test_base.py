"""What every dataset layout shares (saa.datasets.base): the Sample record, the registry of kinds
(unknown kinds and options named), registering a custom layout."""
from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from saa.datasets import DATASETS, AnomalyDataset, Sample, build_dataset, register_dataset
from saa.errors import DatasetError


def test_sample_stem_key_and_frozen(tmp_path):
    s = Sample(tmp_path / "a" / "001-x.png", None, 0, "good", "bottle")
    assert s.stem == "001-x"
    assert s.key == "good/001-x"
    assert not s.is_anomalous
    with pytest.raises(FrozenInstanceError):
        s.label = 1  # type: ignore[misc]


def test_registry_has_all_kinds_and_unknown_kind_lists_them(tmp_path, assert_dataset_error):
    assert {"mvtec", "visa_public", "visa_challenge", "ksdd2", "mtd", "folder"} <= set(DATASETS)
    for name, cls in DATASETS.items():
        assert cls.name == name and issubclass(cls, AnomalyDataset)
    with pytest.raises(DatasetError) as ei:
        build_dataset("mvtec_ad", tmp_path)
    assert_dataset_error(ei, "mvtec_ad", "mvtec", "visa_public", "visa_challenge", "ksdd2", "mtd", "folder")


def test_unknown_option_is_an_error(tmp_path, assert_dataset_error):
    with pytest.raises(DatasetError) as ei:
        build_dataset("ksdd2", tmp_path, spilt="train")
    assert_dataset_error(ei, "spilt", "split")


def test_register_custom_dataset(tmp_path, write_image):
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

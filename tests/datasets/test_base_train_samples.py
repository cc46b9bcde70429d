"""Good training images per layout (``AnomalyDataset.train_samples``, for few-shot references):
MVTec ``train/good`` on real bottle files, prepared VisA ``train/good``, KSDD2's good ``train/``
images; the layouts without any say so in one line, and a training image is never a test image."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from saa.datasets import build_dataset, prepare_visa
from saa.errors import DatasetError

from tests.conftest import BOTTLE

TRAIN = ["019.png", "010.png", "025.png", "013.png"]


@pytest.fixture()
def mvtec_with_train(mvtec_root, add_strays) -> Path:
    """The MVTec fixture of test_datasets plus four real ``train/good`` bottles."""
    dst = mvtec_root / "bottle" / "train" / "good"
    dst.mkdir(parents=True)
    for name in TRAIN:
        shutil.copyfile(BOTTLE / "train" / "good" / name, dst / name)
    add_strays(dst)
    return mvtec_root


def test_mvtec_train_samples_are_the_good_training_images(mvtec_with_train):
    ds = build_dataset("mvtec", mvtec_with_train)
    assert ds.has_train_images
    train = ds.train_samples("bottle")
    folder = mvtec_with_train / "bottle" / "train" / "good"
    assert [s.image_path for s in train] == [folder / n for n in ("010.png", "013.png", "019.png", "025.png")]
    assert all(s.label == 0 and s.mask_path is None and s.defect_type == "good" and s.category == "bottle"
               for s in train)
    # never a test image, and the test samples are unchanged by them
    test = ds.samples("bottle")
    assert len(test) == 7 and not {s.image_path for s in test} & {s.image_path for s in train}
    assert all("train" not in s.image_path.parts for s in test)
    assert ds.train_samples("bottle") == train


def test_mvtec_train_samples_errors(mvtec_with_train):
    ds = build_dataset("mvtec", mvtec_with_train)
    with pytest.raises(DatasetError) as ei:
        ds.train_samples("cable")                               # no such category
    assert "'cable'" in str(ei.value) and "bottle" in str(ei.value)

    folder = mvtec_with_train / "bottle" / "train" / "good"
    test_good = mvtec_with_train / "bottle" / "test" / "good" / "000.png"
    os.link(test_good, folder / "900.png")                      # a test image linked in as a reference
    with pytest.raises(DatasetError) as ei:
        build_dataset("mvtec", mvtec_with_train).train_samples("bottle")
    msg = str(ei.value)
    assert "\n" not in msg and str(folder / "900.png") in msg and str(test_good) in msg

    shutil.rmtree(folder)
    with pytest.raises(DatasetError) as ei:
        build_dataset("mvtec", mvtec_with_train).train_samples("bottle")
    assert "no good training images" in str(ei.value) and str(folder) in str(ei.value)


def test_visa_public_train_samples(tmp_path, visa_raw):
    raw, rows = visa_raw
    out = tmp_path / "1cls"
    prepare_visa(raw, out)
    ds = build_dataset("visa_public", out)
    train = ds.train_samples("candle")
    expected = sorted(Path(r["image"]).name for r in rows if r["object"] == "candle" and r["split"] == "train")
    assert sorted(s.image_path.name for s in train) == expected and len(expected) == 2
    assert all(s.image_path.parent == out / "candle" / "train" / "good" and s.label == 0 for s in train)
    with pytest.raises(DatasetError) as ei:                     # pcb3 has no train row in the fixture
        ds.train_samples("pcb3")
    assert str(out / "pcb3" / "train" / "good") in str(ei.value)


def test_ksdd2_train_samples_are_the_good_images_of_train(ksdd2_root):
    ds = build_dataset("ksdd2", ksdd2_root)
    train = ds.train_samples("ksdd2")
    assert [(s.stem, s.label, s.mask_path) for s in train] == [("10000", 0, None), ("10002", 0, None)]
    assert all(s.image_path.parent == ksdd2_root / "train" for s in train)
    evaluated_train = build_dataset("ksdd2", ksdd2_root, split="train")
    assert not evaluated_train.has_train_images
    with pytest.raises(DatasetError) as ei:
        evaluated_train.train_samples("ksdd2")
    assert "split=train" in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize("kind, options, make, reason", [
    ("mtd", {}, lambda r, write_image: write_image(r / "MT_Free" / "Imgs" / "a.jpg"), "MTD has no train/test split"),
    ("visa_challenge", {}, lambda r, write_image: write_image(r / "Test" / "candle" / "Images" / "a.png"), "zero-shot"),
    ("folder", {"normal_dir": "good"}, lambda r, write_image: write_image(r / "good" / "a.png"), "normal_dir are test images"),
])
def test_layouts_without_training_images_say_so(tmp_path, kind, options, make, reason, write_image):
    make(tmp_path, write_image)
    ds = build_dataset(kind, tmp_path, **options)
    assert not ds.has_train_images
    with pytest.raises(DatasetError) as ei:
        ds.train_samples(ds.categories()[0])
    msg = str(ei.value)
    assert "\n" not in msg and f"dataset kind {kind!r} has no training images" in msg and reason in msg


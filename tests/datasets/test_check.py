"""``saa prepare check`` (saa.datasets.check, validate_dataset): what a dataset folder holds, masks of
the wrong size, unknown categories, EXIF-rotated images, empty masks of defective images, and
``--decode`` finding corrupt files (a decompression bomb refused from its header)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from saa.datasets import build_dataset, validate_dataset
from saa.errors import DatasetError
from saa.image_io import read_rgb


#: every test here starts from the default pixel limit
pytestmark = pytest.mark.usefixtures("default_pixel_limit")


# ----------------------------------------------------------------------------------------------
# validate_dataset on images and masks as they come: EXIF, empty masks, corrupt files


def test_non_square_exif_jpeg_passes_check_and_loads(tmp_path, folder_with_exif_image):
    root = folder_with_exif_image(tmp_path / "parts", 40, 64)
    opts = dict(normal_dir="good", defect_dirs="bad", mask_dir="masks")
    lines = validate_dataset("folder", root, check_sizes=True, **opts)
    assert any(l.startswith("warning:") and "x.jpg" in l and "EXIF orientation 6" in l for l in lines)
    ds = build_dataset("folder", root, **opts)
    s = next(s for s in ds.samples(ds.categories()[0]) if s.label == 1)
    rgb = read_rgb(s.image_path)
    assert rgb.shape[:2] == (40, 64) and ds.load_mask(s, rgb.shape[:2]).shape == (40, 64)


def _folder_with_empty_mask(root: Path, write_png) -> dict:
    write_png(root / "good" / "g.png", np.zeros((16, 16, 3), np.uint8))
    write_png(root / "bad" / "b.png", np.full((16, 16, 3), 90, np.uint8))
    write_png(root / "masks" / "b.png", np.zeros((16, 16), np.uint8))
    return dict(normal_dir="good", defect_dirs="bad", mask_dir="masks")


def test_empty_mask_of_a_defective_image_is_a_warning(tmp_path, caplog, run_cli, write_png):
    root = tmp_path / "p"
    opts = _folder_with_empty_mask(root, write_png)
    ds = build_dataset("folder", root, **opts)
    s = next(s for s in ds.samples(ds.categories()[0]) if s.label == 1)
    with caplog.at_level(logging.WARNING, logger="saa.datasets"):
        assert not ds.load_mask(s, (16, 16)).any()
    assert any("empty mask" in r.getMessage() and "b.png" in r.getMessage() for r in caplog.records)
    lines = validate_dataset("folder", root, check_sizes=True, **opts)
    assert any(l.startswith("warning:") and "empty mask" in l and "b.png" in l for l in lines)
    r = run_cli("prepare", "check", "folder", root, "--decode", *[f"--option={k}={v}" for k, v in opts.items()])
    assert r.returncode == 0 and "warning: anomalous image" in r.stdout, r.stderr


def test_prepare_check_decodes_and_finds_corrupt_files(tmp_path, bomb_png, run_cli, truncated_png, write_png):
    root = tmp_path / "p"
    opts = _folder_with_empty_mask(root, write_png)
    truncated_png(root / "good" / "cut.png", (16, 16, 3))
    validate_dataset("folder", root, check_sizes=True, **opts)  # cut.png has no mask: not decoded
    with pytest.raises(DatasetError) as e:
        validate_dataset("folder", root, decode=True, **opts)
    assert "cut.png" in str(e.value) and "truncated" in str(e.value)
    r = run_cli("prepare", "check", "folder", root, "--decode", *[f"--option={k}={v}" for k, v in opts.items()])
    assert r.returncode == 1 and "cut.png" in r.stderr and "Traceback" not in r.stderr
    # --check-sizes decodes the masks it compares: a corrupt mask whose header is intact is found
    (root / "good" / "cut.png").unlink()
    truncated_png(root / "masks" / "b.png", (16, 16), keep=0.5)
    with pytest.raises(DatasetError, match="unreadable mask.*b.png"):
        validate_dataset("folder", root, check_sizes=True, **opts)
    # a bomb is refused from its header, before anything is decoded
    bomb_png(root / "masks" / "b.png", 30000, 30000)
    with pytest.raises(DatasetError, match="over the limit of 100 Mpx"):
        validate_dataset("folder", root, check_sizes=True, **opts)


# ----------------------------------------------------------------------------------------------
# validate_dataset: the report, problems


def test_validate_dataset_report(mvtec_root):
    lines = validate_dataset("mvtec", mvtec_root, check_sizes=True)
    text = "\n".join(lines)
    assert "1 categories present (bottle)" in text
    assert "bottle: 7 images (3 normal, 4 anomalous), 4 masks" in text
    assert "absent" in text and "carpet" in text


def test_validate_dataset_reports_problems(ksdd2_root, mvtec_root, assert_dataset_error, write_mask):
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

"""Labels are never lost silently (issue 22): masks are matched to their images by name ignoring
letter case in every layout (``saa/datasets/files.py`` MaskFiles), two masks for one image are a
one-line error, and mask files that match no image are listed by ``saa prepare check`` and warned
about by runs."""
from __future__ import annotations

import logging
import shutil

import pytest

from saa.cli import main
from saa.datasets import build_dataset, validate_dataset
from saa.errors import DatasetError

from tests.conftest import REPO


def unmatched_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("saa.datasets") and "match no image" in r.getMessage()]


# ----------------------------------------------------------------------------------------------
# letter case


def test_image_dirs_mask_differing_in_letter_case_labels_its_image(tmp_path, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "mixed" / "A1.png")
    write_mask(root / "masks" / "a1_MASK.png")              # the name differs only in case
    write_image(root / "mixed" / "b2.PNG")
    write_mask(root / "masks" / "B2_mask.png", box=None)    # all zero: good, but its mask is found
    write_image(root / "mixed" / "c3.png")
    write_mask(root / "masks" / "c3_mask.png")              # exact name
    ds = build_dataset("folder", root, image_dirs="mixed", mask_dir="masks", mask_suffix="_mask")
    by = {s.stem: s for s in ds.samples("parts")}
    assert {k: s.label for k, s in by.items()} == {"A1": 1, "b2": 0, "c3": 1}
    assert by["A1"].mask_path == root / "masks" / "a1_MASK.png"
    assert by["b2"].mask_path == root / "masks" / "B2_mask.png"
    assert ds.unmatched_masks("parts") == []
    assert ds.label_notes("parts") == [
        "parts: 3 images of image_dirs labelled by their masks: 2 defective (a non-zero mask pixel), "
        "1 good with an all-zero mask, 0 good without a mask file"]


def test_masks_beside_the_images_match_the_suffix_in_any_case(tmp_path, write_image, write_mask):
    """KSDD2-like folder with a lower-case ``_gt``: the mask is no image, and it labels its image."""
    root = tmp_path / "plates"
    write_image(root / "1.png")
    write_mask(root / "1_gt.png")
    write_image(root / "2.png")
    write_mask(root / "2_GT.png", box=None)
    ds = build_dataset("folder", root, image_dirs=".", mask_dir=".", mask_suffix="_GT")
    assert [(s.key, s.label) for s in ds.samples("plates")] == [("plates/1", 1), ("plates/2", 0)]


def test_defect_dirs_mask_differing_in_letter_case_is_found(tmp_path, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "defects" / "Scratch" / "S1.png")
    write_mask(root / "masks" / "Scratch" / "s1_mask.png")
    ds = build_dataset("folder", root, defect_dirs="defects/*", mask_dir="masks", mask_suffix="_mask")
    (s,) = ds.samples("parts")
    assert s.mask_path == root / "masks" / "Scratch" / "s1_mask.png" and s.label == 1


@pytest.mark.parametrize("layout", ["folder_exact_and_variant", "folder_two_variants", "mvtec", "ksdd2", "mtd"])
def test_two_masks_for_one_image_are_a_one_line_error(tmp_path, layout, write_image, write_mask):
    if layout == "folder_exact_and_variant":
        root = tmp_path / "parts"
        write_image(root / "mixed" / "a.png")
        first, second = write_mask(root / "masks" / "a.png"), write_mask(root / "masks" / "A.png", box=None)
        ds = build_dataset("folder", root, image_dirs="mixed", mask_dir="masks")
        cat = "parts"
    elif layout == "folder_two_variants":
        root = tmp_path / "parts"
        write_image(root / "mixed" / "Ab.png")
        first, second = write_mask(root / "masks" / "AB.png"), write_mask(root / "masks" / "ab.png", box=None)
        ds = build_dataset("folder", root, image_dirs="mixed", mask_dir="masks")
        cat = "parts"
    elif layout == "mvtec":
        root = tmp_path / "mv"
        write_image(root / "pill" / "test" / "crack" / "000.png")
        first = write_mask(root / "pill" / "ground_truth" / "crack" / "000_mask.png")
        second = write_mask(root / "pill" / "ground_truth" / "crack" / "000_MASK.png")
        ds = build_dataset("mvtec", root)
        cat = "pill"
    elif layout == "ksdd2":
        root = tmp_path / "k"
        write_image(root / "test" / "7.png")
        first, second = write_mask(root / "test" / "7_GT.png"), write_mask(root / "test" / "7_gt.png", box=None)
        ds = build_dataset("ksdd2", root)
        cat = "ksdd2"
    else:
        root = tmp_path / "MTD"
        write_image(root / "MT_Crack" / "Imgs" / "t1.jpg")
        first, second = write_mask(root / "MT_Crack" / "Imgs" / "T1.png"), write_mask(root / "MT_Crack" / "Imgs" / "t1.PNG")
        ds = build_dataset("mtd", root)
        cat = "mtd"
    with pytest.raises(DatasetError) as ei:
        ds.samples(cat)
    msg = str(ei.value)
    assert "\n" not in msg and "letter case" in msg
    assert str(first) in msg and str(second) in msg, msg


def test_same_names_in_two_cases_for_two_images_are_fine(tmp_path, write_image, write_mask):
    """a.png with mask a.png and A.png with mask A.png (a case-sensitive file system): each its own."""
    root = tmp_path / "parts"
    write_image(root / "mixed" / "a.png")
    write_image(root / "mixed" / "A.png", value=30)
    write_mask(root / "masks" / "a.png")
    write_mask(root / "masks" / "A.png", box=None)
    ds = build_dataset("folder", root, image_dirs="mixed", mask_dir="masks")
    assert {s.stem: (s.label, s.mask_path.name) for s in ds.samples("parts")} == {"a": (1, "a.png"), "A": (0, "A.png")}


# ----------------------------------------------------------------------------------------------
# masks that match no image


def test_renamed_mask_of_image_dirs_is_listed_and_warned(tmp_path, caplog, capsys, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "mixed" / "x1.png")
    write_mask(root / "masks" / "x1_mask.png")
    write_image(root / "mixed" / "x2.png")
    orphan = write_mask(root / "masks" / "x2_old_mask.png")  # renamed: x2 keeps no mask
    opts = dict(image_dirs="mixed", mask_dir="masks", mask_suffix="_mask")
    ds = build_dataset("folder", root, **opts)
    with caplog.at_level(logging.WARNING, logger="saa.datasets"):
        labels = {s.stem: s.label for s in ds.samples("parts")}
        ds.samples("parts")  # once per category, not per call
    assert labels == {"x1": 1, "x2": 0}
    (warning,) = unmatched_warnings(caplog)
    assert "'parts': 1 mask file(s) match no image" in warning and str(orphan) in warning
    assert ds.unmatched_masks("parts") == [orphan]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saa.datasets"):
        lines = validate_dataset("folder", root, **opts)
    assert unmatched_warnings(caplog) == []  # the check lists them itself, no second copy
    assert "parts: 1 mask file(s) match no image and label nothing (listed as warnings)" in lines
    assert f"warning: mask matches no image of 'parts' (a renamed image or mask?): {orphan}" in lines

    args = ["prepare", "check", "folder", str(root)] + [f"--option={k}={v}" for k, v in opts.items()]
    assert main(args) == 0  # a warning, not a failed check
    out = capsys.readouterr().out
    assert f"warning: mask matches no image of 'parts' (a renamed image or mask?): {orphan}" in out


def test_renamed_defect_folder_leaves_its_masks_listed(tmp_path, write_image, write_mask):
    """masks/scratch/ stays while the images move to defects/scratches/: image_dirs would label
    them good; the masks of the old folder are named."""
    root = tmp_path / "parts"
    write_image(root / "batch" / "b1.png")
    write_mask(root / "masks" / "b1.png")
    write_image(root / "scratches" / "s1.png")
    orphan = write_mask(root / "masks" / "scratch" / "s1.png")
    ds = build_dataset("folder", root, image_dirs=["batch", "scratches"], mask_dir="masks")
    assert {s.key: s.label for s in ds.samples("parts")} == {"batch/b1": 1, "scratches/s1": 0}
    assert ds.unmatched_masks("parts") == [orphan]


def test_masks_of_normal_images_and_shadowed_flat_masks_are_not_listed(tmp_path, caplog, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "good" / "n1.png")
    write_mask(root / "masks" / "good" / "n1_mask.png", box=None)   # the masks of good parts, not read
    write_mask(root / "masks" / "n1_mask.png", box=None)
    write_image(root / "defects" / "dent" / "d1.png")
    write_mask(root / "masks" / "dent" / "d1_mask.png")
    write_mask(root / "masks" / "d1_mask.png")                      # shadowed by the nested one
    ds = build_dataset("folder", root, normal_dir="good", defect_dirs="defects/*", mask_dir="masks",
                       mask_suffix="_mask")
    with caplog.at_level(logging.WARNING, logger="saa.datasets"):
        assert len(ds.samples("parts")) == 2
    assert ds.unmatched_masks("parts") == [] and unmatched_warnings(caplog) == []


def test_many_unmatched_masks_warning_names_a_few(tmp_path, caplog, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "mixed" / "x1.png")
    write_mask(root / "masks" / "x1.png")
    for i in range(5):
        write_mask(root / "masks" / f"old{i}.png")
    ds = build_dataset("folder", root, image_dirs="mixed", mask_dir="masks")
    with caplog.at_level(logging.WARNING, logger="saa.datasets"):
        ds.samples("parts")
    (warning,) = unmatched_warnings(caplog)
    assert "5 mask file(s)" in warning and "and 2 more" in warning
    assert sum(f"old{i}.png" in warning for i in range(5)) == 3


def test_unmatched_masks_of_mvtec(mvtec_root, write_mask):
    gt = mvtec_root / "bottle" / "ground_truth"
    a = write_mask(gt / "broken_large" / "099_mask.png", 900, 900)       # its image is gone
    b = write_mask(gt / "broken_lrage" / "000_mask.png", 900, 900)       # a misspelt defect folder
    write_mask(gt / "good" / "000_mask.png", 900, 900, box=None)         # a mask of a good image: not read
    ds = build_dataset("mvtec", mvtec_root)
    assert len(ds.samples("bottle")) == 7
    assert ds.unmatched_masks("bottle") == [a, b]
    lines = validate_dataset("mvtec", mvtec_root)
    assert "bottle: 2 mask file(s) match no image and label nothing (listed as warnings)" in lines
    assert sum(l.startswith("warning: mask matches no image") for l in lines) == 2


def test_unmatched_masks_of_ksdd2_and_mtd(ksdd2_root, mtd_root, write_mask):
    orphan = write_mask(ksdd2_root / "test" / "29999_GT.png", 10, 12)
    ds = build_dataset("ksdd2", ksdd2_root)
    assert len(ds.samples("ksdd2")) == 4 and ds.unmatched_masks("ksdd2") == [orphan]

    imgs = mtd_root / "MT_Blowhole" / "Imgs"
    orphan = imgs / "exp9_num_1.png"
    shutil.copyfile(next(imgs.glob("exp*.png")), orphan)                 # its .jpg is missing
    shutil.copyfile(orphan, mtd_root / "MT_Free" / "Imgs" / "exp9_num_2.png")  # MT_Free masks are not read
    ds = build_dataset("mtd", mtd_root)
    assert len(ds.samples("mtd")) == 6 and ds.unmatched_masks("mtd") == [orphan]


def test_a_run_warns_about_masks_that_match_no_image(tmp_path, caplog, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    orphan = data / "bottle" / "ground_truth" / "broken_large" / "001_mask.png"
    shutil.copyfile(data / "bottle" / "ground_truth" / "broken_large" / "000_mask.png", orphan)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="saa.datasets"):
        assert main(["-q", "run", str(REPO / "configs" / "mvtec.yaml"), "--data-root", str(data), "--out", str(out),
                     "--no-progress", "--method", "lite", "--set", f"models.weights_dir={tmp_path / 'none'}"]) == 0
    (warning,) = unmatched_warnings(caplog)  # once, though the run and its report both open the dataset
    assert "'bottle': 1 mask file(s) match no image" in warning and str(orphan) in warning
    assert (out / "metrics.json").is_file()

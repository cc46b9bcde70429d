"""Inputs identified by real file identity in datasets (issue 22): one image file reached twice in
a category (a folder link picked by a glob, a hard link, a file link, two spellings of one folder)
is refused in one line naming both paths, so a cross-image method never scores an image against
itself; the folder glob of kind ``folder`` (``saa/datasets/files.py`` glob_folders) never follows a
link back into a folder above it and has a bound with a message."""
from __future__ import annotations

import logging
import os

import pytest

from saa.datasets import build_dataset
from saa.errors import DatasetError



def assert_one_line_naming(excinfo, *paths) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for p in paths:
        assert str(p) in msg, f"{p} not in {msg}"
    return msg


# ----------------------------------------------------------------------------------------------
# one file, two paths


def test_folder_link_picked_by_a_glob_is_refused(tmp_path, write_image):
    root = tmp_path / "parts"
    write_image(root / "good" / "n1.png")
    s1 = write_image(root / "defects" / "scratch" / "s1.png")
    os.symlink("scratch", root / "defects" / "latest")       # "latest" -> the same folder
    ds = build_dataset("folder", root, normal_dir="good", defect_dirs="defects/*")
    with pytest.raises(DatasetError) as ei:
        ds.samples("parts")
    msg = assert_one_line_naming(ei, root / "defects" / "latest" / "s1.png", s1)
    assert "reached twice" in msg and "'parts'" in msg


def test_hard_link_in_two_mvtec_folders_is_refused(tmp_path, write_image, write_mask):
    root = tmp_path / "mv"
    good = write_image(root / "pill" / "test" / "good" / "000.png")
    bad = root / "pill" / "test" / "crack" / "007.png"
    bad.parent.mkdir(parents=True)
    os.link(good, bad)
    write_mask(root / "pill" / "ground_truth" / "crack" / "007_mask.png")
    with pytest.raises(DatasetError) as ei:
        build_dataset("mvtec", root).samples("pill")
    assert_one_line_naming(ei, good, bad)


def test_file_link_in_one_folder_is_refused(tmp_path, write_image):
    root = tmp_path / "mv"
    write_image(root / "pill" / "test" / "good" / "000.png")
    os.symlink("000.png", root / "pill" / "test" / "good" / "001.png")
    with pytest.raises(DatasetError) as ei:
        build_dataset("mvtec", root).samples("pill")
    assert_one_line_naming(ei, root / "pill" / "test" / "good" / "000.png", root / "pill" / "test" / "good" / "001.png")


def test_two_spellings_of_one_folder_are_refused(tmp_path, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "mixed" / "m1.png")
    write_mask(root / "masks" / "m1.png")
    ds = build_dataset("folder", root, image_dirs=["mixed", "mixed/../mixed"], mask_dir="masks")
    with pytest.raises(DatasetError) as ei:
        ds.samples("parts")
    assert_one_line_naming(ei, root / "mixed" / "m1.png", root / "mixed" / ".." / "mixed" / "m1.png")
    # one spelling given twice (a glob and a name) is one folder, as before
    ds = build_dataset("folder", root, image_dirs=["mixed", "mix*"], mask_dir="masks")
    assert [s.key for s in ds.samples("parts")] == ["mixed/m1"]


def test_a_glob_leaves_out_the_mask_folder_given_by_another_spelling(tmp_path, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "batch" / "b1.png")
    write_mask(root / "masks" / "b1.png")
    ds = build_dataset("folder", root, image_dirs="*", mask_dir=str(root / "masks" / ".." / "masks"))
    assert [(s.key, s.label) for s in ds.samples("parts")] == [("batch/b1", 1)]


# ----------------------------------------------------------------------------------------------
# the folder glob


def test_glob_does_not_follow_a_link_back_into_an_ancestor(tmp_path, caplog, write_image):
    root = tmp_path / "parts"
    write_image(root / "overview.png")                        # an image of the root itself
    s1 = write_image(root / "defects" / "scratch" / "s1.png")
    os.symlink("..", root / "defects" / "up")                 # defects/up -> the root
    with caplog.at_level(logging.WARNING, logger="saa.datasets"):
        ds = build_dataset("folder", root, defect_dirs="defects/*")
        samples = ds.samples("parts")
    assert [s.image_path for s in samples] == [s1]            # the root is no defect folder
    assert any("pointing back" in r.getMessage() and str(root / "defects" / "up") in r.getMessage()
               for r in caplog.records)


def test_glob_of_a_folder_holding_a_link_to_itself_ends(tmp_path):
    from saa.datasets import glob_folders

    root = tmp_path / "tree"
    for d in ("a/x", "a/y", "b"):
        (root / d).mkdir(parents=True)
    os.symlink(".", root / "a" / "self")
    os.symlink(str(root), root / "a" / "x" / "top")
    os.symlink("../b", root / "a" / "to_b")                   # a link elsewhere
    got = glob_folders(root, "**")
    # as Path.glob: "**" enters no folder link, so the links back to a/ and to the root cannot loop
    assert got == [root, root / "a", root / "a" / "x", root / "a" / "y", root / "b"]
    # a wildcard matches a link elsewhere, never one back into a folder above it
    assert glob_folders(root, "a/*") == [root / "a" / "to_b", root / "a" / "x", root / "a" / "y"]
    assert glob_folders(root, "a/*/*") == []


@pytest.mark.parametrize("pattern", ["*", "*/*", "**", "**/s?", "d*/*", "[bd]*", "defects/**", "../parts/*"])
def test_glob_finds_what_pathlib_finds_without_links(tmp_path, pattern):
    from saa.datasets import glob_folders

    root = tmp_path / "parts"
    for d in ("good", "defects/scratch", "defects/s1", "defects/dent/s2", "batch", ".hidden/s3", "masks/s4"):
        (root / d).mkdir(parents=True)
    (root / "defects" / "notes.txt").write_text("x")
    expected = sorted(p for p in root.glob(pattern) if p.is_dir() and not p.name.startswith("."))
    assert glob_folders(root, pattern) == expected


def test_glob_has_a_bound_with_a_message(tmp_path, monkeypatch, write_image):
    import saa.datasets.files as dataset_files

    root = tmp_path / "parts"
    for i in range(8):
        write_image(root / "lots" / f"d{i}" / "x.png")
    assert len(build_dataset("folder", root, defect_dirs="lots/**").samples("parts")) == 8
    monkeypatch.setattr(dataset_files, "MAX_GLOB_FOLDERS", 5)
    with pytest.raises(DatasetError) as ei:
        build_dataset("folder", root, defect_dirs="lots/**").samples("parts")
    msg = assert_one_line_naming(ei, "'lots/**'", root)
    assert "more than 5 folders" in msg and "defect_dirs" in msg
    with pytest.raises(DatasetError) as ei:                   # one folder listed, but 8 matches
        build_dataset("folder", root, defect_dirs="lots/*").samples("parts")
    assert "more than 5 folders" in str(ei.value)

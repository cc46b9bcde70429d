"""Your own parts: dataset kind ``folder`` (saa.datasets.folder) as docs/your_own_parts.md documents it.

The YAML of the guide is read from the guide itself (and must equal configs/folder_example.yaml),
then run with the lite method on a small folder of real images laid out as the guide shows, so the
example cannot rot. ``image_dirs`` (normal and defective images mixed, labelled by their masks) is
checked on its own: non-zero mask, all-zero mask, no mask, masks beside the images, and the
mistakes a user makes with it. Then mask_dir and glob, the options, the errors.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from saa.config import config_from_dict, load_config
from saa.datasets import build_dataset, validate_dataset
from saa.errors import DatasetError
from saa.evaluation import split_dataset_options

from tests.conftest import BOTTLE, REPO


GUIDE = REPO / "docs" / "your_own_parts.md"


EXAMPLE = REPO / "configs" / "folder_example.yaml"


SIDE = 128


def yaml_blocks(path: Path) -> list[str]:
    """The ```yaml fenced blocks of a markdown file, in order (text without the fences)."""
    return re.findall(r"^```yaml\n(.*?)^```$", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "saa.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def put_real(src: Path, dst: Path, mask: bool = False) -> None:
    im = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE if mask else cv2.IMREAD_COLOR)
    assert im is not None, src
    im = cv2.resize(im, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST if mask else cv2.INTER_AREA)
    if mask:
        im = np.where(im > 127, 255, 0).astype(np.uint8)
    dst.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(dst), im)


def make_my_parts(root: Path, add_strays) -> Path:
    """The guide's layout from real MVTec bottles: good/, defects/<type>/, masks/<type>/ and a flat
    mask in masks/ (one of each place the guide names)."""
    assert BOTTLE.is_dir(), f"real sample data missing: {BOTTLE}"
    for stem in ("000", "002", "004"):
        put_real(BOTTLE / "test" / "good" / f"{stem}.png", root / "good" / f"{stem}.png")
    for kind, stems, nested in (("broken_large", ("000", "003"), True), ("contamination", ("000", "003"), False)):
        for stem in stems:
            name = f"{kind[:5]}{stem}"
            put_real(BOTTLE / "test" / kind / f"{stem}.png", root / "defects" / kind / f"{name}.png")
            where = root / "masks" / kind if nested else root / "masks"
            put_real(BOTTLE / "ground_truth" / kind / f"{stem}_mask.png", where / f"{name}_mask.png", mask=True)
    add_strays(root / "good")
    return root


# ----------------------------------------------------------------------------------------------
# the guide's example


def test_guide_yaml_is_the_example_config():
    blocks = yaml_blocks(GUIDE)
    assert len(blocks) >= 2, "the guide lost its YAML examples"
    assert blocks[0] == EXAMPLE.read_text(encoding="utf-8"), \
        "docs/your_own_parts.md must reproduce configs/folder_example.yaml exactly"
    readme = yaml_blocks(REPO / "README.md")
    assert EXAMPLE.read_text(encoding="utf-8") in readme, \
        "the README's 'Your own parts' must reproduce configs/folder_example.yaml exactly"
    cfg = load_config(EXAMPLE)
    assert cfg.dataset.kind == "folder"
    opts = cfg.dataset.options
    # the example sets every option of the folder kind but image_dirs (shown commented, and in block 2)
    assert {"category", "normal_dir", "defect_dirs", "mask_dir", "mask_suffix", "extensions"} <= set(opts)
    assert opts["category"] in cfg.categories
    assert "image_dirs:" in blocks[0]
    # every option the guide's table lists is one the dataset accepts
    table = re.findall(r"^\| `(\w+)` \|", GUIDE.read_text(encoding="utf-8"), flags=re.M)
    from saa.datasets import FolderDataset
    assert set(table) == set(FolderDataset.option_defaults) | {"eval_size"}


def test_example_leaves_the_tiny_models_unchanged(tmp_path):
    """saa.testing builds the tiny BERT vocabulary from the words of configs/*.yaml: the example uses
    only words the benchmark configs have, so the tiny models every other test uses stay the same."""
    from saa.testing import build_vocab

    others = tmp_path / "configs"
    others.mkdir()
    for p in (REPO / "configs").glob("*.yaml"):
        if p != EXAMPLE:
            (others / p.name).write_text(p.read_text())
    assert build_vocab() == build_vocab(configs_dir=others)


def test_guide_example_runs_lite_from_its_folder(tmp_path, add_strays):
    """As the guide says: my_parts/ in the current directory, `saa run <example> --method lite`."""
    make_my_parts(tmp_path / "my_parts", add_strays)
    r = run_cli("prepare", "check", "--config", str(EXAMPLE), "--decode", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "metal_part: 7 images (3 normal, 4 anomalous), 4 masks; types: broken_large, contamination, good" in r.stdout

    r = run_cli("run", str(EXAMPLE), "--method", "lite", "--device", "cpu", "--out", "out", "--no-progress",
                cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    cat = result["categories"]["metal_part"]
    assert cat["counts"] == {"images": 7, "normal": 3, "anomalous": 4, "unlabelled": 0}
    m = cat["metrics"]
    assert m["image_auroc"] == 100.0  # real features: the broken / contaminated bottles score above the good ones
    assert m["pixel_auroc"] is not None and 50 < m["pixel_auroc"] <= 100  # masks were read: pixel metrics exist
    rows = (tmp_path / "out" / "metal_part" / "scores.csv").read_text().splitlines()
    labels = {line.split(",")[0]: line.split(",")[1] for line in rows[1:]}
    assert labels == {"broken_large/broke000": "1", "broken_large/broke003": "1", "contamination/conta000": "1",
                      "contamination/conta003": "1", "good/000": "0", "good/002": "0", "good/004": "0"}


def test_guide_mixed_folder_example(tmp_path, add_strays, write_image, write_mask):
    """The guide's image_dirs block in the example config: labels from mask content."""
    block = yaml.safe_load(yaml_blocks(GUIDE)[1])
    data = yaml.safe_load(EXAMPLE.read_text())
    data["dataset"] = block["dataset"]
    cfg = config_from_dict(data)
    root = tmp_path / cfg.dataset.root
    write_image(root / "mixed" / "a1.png")                       # non-zero mask -> defective
    write_mask(root / "masks" / "a1_mask.png")
    write_image(root / "mixed" / "a2.png")                       # all-zero mask -> good
    write_mask(root / "masks" / "a2_mask.png", box=None)
    write_image(root / "mixed" / "a3.jpg")                       # no mask -> good
    write_image(root / "mixed" / "a4.bmp")                       # 0/1 mask (not 0/255) -> defective
    write_mask(root / "masks" / "a4_mask.png", on=1)
    add_strays(root / "mixed")
    options, _ = split_dataset_options(cfg.dataset.options)
    ds = build_dataset(cfg.dataset.kind, root, **options)
    samples = {s.stem: s for s in ds.samples("metal_part")}
    assert {k: s.label for k, s in samples.items()} == {"a1": 1, "a2": 0, "a3": 0, "a4": 1}
    assert samples["a3"].mask_path is None and samples["a2"].mask_path == root / "masks" / "a2_mask.png"
    assert {s.defect_type for s in samples.values()} == {"mixed"}  # keys do not change with the label
    assert ds.load_mask(samples["a4"], (6, 8)).sum() == 6 and not ds.load_mask(samples["a2"], (6, 8)).any()

    (tmp_path / "mixed.yaml").write_text(cfg.to_yaml())
    r = run_cli("prepare", "check", "--config", "mixed.yaml", "--check-sizes", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "metal_part: 4 images (2 normal, 2 anomalous), 3 masks; types: mixed" in r.stdout
    assert ("metal_part: 4 images of image_dirs labelled by their masks: 2 defective (a non-zero mask pixel), "
            "1 good with an all-zero mask, 1 good without a mask file") in r.stdout


# ----------------------------------------------------------------------------------------------
# image_dirs on its own


def test_image_dirs_masks_beside_the_images(tmp_path, assert_dataset_error, write_image, write_mask):
    """KSDD2-like: <id>.png + <id>_GT.png in one folder (the root itself)."""
    root = tmp_path / "plates"
    for i, box in ((1, (0, 2, 0, 2)), (2, None), (3, None)):
        write_image(root / f"{i}.png")
        write_mask(root / f"{i}_GT.png", box=box)
    write_image(root / "4.png")  # no GT at all: good
    ds = build_dataset("folder", root, image_dirs=".", mask_dir=".", mask_suffix="_GT")
    samples = ds.samples("plates")
    assert [(s.key, s.label) for s in samples] == [("plates/1", 1), ("plates/2", 0), ("plates/3", 0), ("plates/4", 0)]
    # no suffix: the masks would be listed as images too
    with pytest.raises(DatasetError) as ei:
        build_dataset("folder", root, image_dirs=".", mask_dir=".").samples("plates")
    assert_dataset_error(ei, "mask_suffix", root)


def test_image_dirs_with_normal_and_defect_dirs_and_glob(tmp_path, assert_dataset_error, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "ok" / "n1.png")
    write_mask(root / "masks" / "n1.png")            # a mask beside a normal_dir image is not read
    write_image(root / "defects" / "scratch" / "s1.png")
    write_mask(root / "masks" / "scratch" / "s1.png")
    write_image(root / "batch_a" / "b1.png")
    write_mask(root / "masks" / "b1.png")
    write_image(root / "batch_b" / "b2.png")         # no mask: good
    ds = build_dataset("folder", root, normal_dir="ok", defect_dirs="defects/*", image_dirs="*", mask_dir="masks")
    got = [(s.key, s.label) for s in ds.samples("parts")]
    # the glob "*" picks batch_a, batch_b and defects (not ok/ nor masks/); defects/ itself has no images
    assert got == [("batch_a/b1", 1), ("batch_b/b2", 0), ("good/n1", 0), ("scratch/s1", 1)]

    with pytest.raises(DatasetError) as ei:  # one folder in both lists
        build_dataset("folder", root, defect_dirs="batch_a", image_dirs="batch_*", mask_dir="masks").samples("parts")
    assert_dataset_error(ei, "defect_dirs", "image_dirs", root / "batch_a")
    with pytest.raises(DatasetError) as ei:  # the normal folder named as a mixed one
        build_dataset("folder", root, normal_dir="ok", image_dirs=["ok"], mask_dir="masks").samples("parts")
    assert_dataset_error(ei, "normal_dir", root / "ok")


def test_image_dirs_without_any_mask_is_an_error_not_all_good(tmp_path, assert_dataset_error, write_image, write_mask):
    """A wrong mask_suffix must not turn every image into a good one."""
    root = tmp_path / "parts"
    write_image(root / "mixed" / "x1.png")
    write_mask(root / "masks" / "x1_mask.png")
    ds = build_dataset("folder", root, image_dirs="mixed", mask_dir="masks", mask_suffix="_GT")
    with pytest.raises(DatasetError) as ei:
        ds.samples("parts")
    msg = assert_dataset_error(ei, "none of the 1 images of image_dirs has a mask", root / "mixed" / "x1.png",
                               root / "masks" / "x1_GT.png", "mask_suffix", layout=ds)
    assert "x1_mask" not in msg.split("\n\n")[0]
    with pytest.raises(DatasetError) as ei:
        validate_dataset("folder", root, image_dirs="mixed", mask_dir="masks", mask_suffix="_GT")
    assert_dataset_error(ei, "none of the 1 images")


def test_image_dirs_mask_size_and_unreadable_mask(tmp_path, assert_dataset_error, write_image, write_mask):
    root = tmp_path / "parts"
    write_image(root / "mixed" / "x1.png")
    write_mask(root / "masks" / "x1.png", h=5, box=None)   # all zero, but the wrong size
    write_image(root / "mixed" / "x2.png")
    write_mask(root / "masks" / "x2.png")
    with pytest.raises(DatasetError) as ei:
        validate_dataset("folder", root, image_dirs="mixed", mask_dir="masks", check_sizes=True)
    assert_dataset_error(ei, "differs from image size", root / "masks" / "x1.png")
    (root / "masks" / "x2.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError) as ei:
        build_dataset("folder", root, image_dirs="mixed", mask_dir="masks").samples("parts")
    assert_dataset_error(ei, "cannot read the mask", root / "mixed" / "x2.png")


@pytest.mark.parametrize("options, fragments", [
    ({"image_dirs": "mixed"}, ("image_dirs", "needs option mask_dir")),
    ({"image_dirs": 5, "mask_dir": "m"}, ("option image_dirs must be a folder", "5")),
    ({"defect_dirs": [["a"]]}, ("option defect_dirs must be", "[['a']]")),
    ({"normal_dir": ["ok", "ok2"]}, ("option normal_dir must be a folder path",)),
    ({"labels": "from_masks"}, ("unknown option(s) labels", "image_dirs")),
])
def test_folder_option_mistakes_are_one_line(tmp_path, options, fragments, assert_dataset_error):
    (tmp_path / "mixed").mkdir()
    with pytest.raises(DatasetError) as ei:
        build_dataset("folder", tmp_path, **options)
    msg = assert_dataset_error(ei, *fragments)
    assert "\n" not in msg


def test_cli_option_mistake_names_the_option_without_a_traceback(tmp_path, write_image):
    make_dirs = tmp_path / "my_parts" / "good"
    write_image(make_dirs / "1.png")
    r = run_cli("run", str(EXAMPLE), "--method", "lite", "--out", "out", "--set", "dataset.options.image_dirs=5",
                cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "option image_dirs must be a folder" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_prepare_check_config_arguments(tmp_path, write_image):
    write_image(tmp_path / "elsewhere" / "good" / "1.png")
    r = run_cli("prepare", "check", "--config", str(EXAMPLE), "--data-root", "elsewhere",
                "--option", "mask_dir=null", "--option", "defect_dirs=null", "--option", "category=widget",
                cwd=tmp_path)
    assert r.returncode == 1
    assert "widget: 1 images (1 normal, 0 anomalous), 0 masks" in r.stdout
    assert "describes no category widget" in r.stdout and "dataset.options.category" in r.stdout
    r = run_cli("prepare", "check", "--config", str(EXAMPLE), "elsewhere", cwd=tmp_path)
    assert r.returncode == 1 and "--data-root" in r.stderr
    r = run_cli("prepare", "check", cwd=tmp_path)
    assert r.returncode == 1 and "KIND and ROOT" in r.stderr


# ----------------------------------------------------------------------------------------------
# mask_dir and glob, the options, the errors


@pytest.fixture()
def folder_root(tmp_path, add_strays, write_image, write_mask) -> Path:
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


def test_folder_errors(folder_root, tmp_path, assert_dataset_error):
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

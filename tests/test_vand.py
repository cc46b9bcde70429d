"""The VAND 2023 challenge tree (saa.vand): classification ``.txt`` and segmentation ``.npz`` per
image, values on the challenge's scale, names checked, files written atomically."""
from __future__ import annotations

import numpy as np
import pytest

from saa import vand as V


def test_vand_writer(tmp_path):
    m = np.zeros((400, 400), np.float32)
    m[10, 10], m[20, 20], m[30, 30] = 1.0, 0.5, 0.2
    txt, npz = V.write_vand_image(tmp_path, "pcb1", "000-a.b", m, 0.123456)
    assert txt == tmp_path / "visa_challenge/0shot/0/pcb1/Unknown/classification/000-a.b.txt"
    assert npz == tmp_path / "visa_challenge/0shot/0/pcb1/Unknown/segmentation/000-a.b.npz"
    assert txt.read_text() == "0.12346"
    with np.load(npz) as z:
        assert z.files == ["img"]
        img = z["img"]
    assert img.dtype == np.uint8 and img.shape == (400, 400)
    assert (img[10, 10], img[20, 20], img[30, 30], img[0, 0]) == (255, 128, 51, 0)
    # other sizes are resized to 400; scores clipped to [0, 1]
    V.write_vand_category(tmp_path, "pcb2", ["x-1", "y.2.z"], [np.ones((64, 64)), np.zeros((100, 50))],
                          [1.0000001, -1e-9], experiment="exp")
    s, seg = V.read_vand_image(tmp_path, "pcb2", "x-1", experiment="exp")
    assert s == 1.0 and seg.shape == (400, 400) and (seg == 255).all()
    assert (tmp_path / "exp/0shot/0/pcb2/Unknown/classification/y.2.z.txt").read_text() == "0.00000"
    assert V.category_stems(tmp_path, "pcb2", "exp") == ["x-1", "y.2.z"]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    with pytest.raises(ValueError):
        V.write_vand_image(tmp_path, "pcb1", "a/b", m, 0.5)
    with pytest.raises(ValueError):
        V.write_vand_image(tmp_path, "pcb1", "c", m, float("nan"))
    with pytest.raises(ValueError, match="duplicate"):
        V.write_vand_category(tmp_path, "pcb1", ["d", "d"], [m, m], [0.1, 0.2])


def test_vand_few_shot_tree(tmp_path):
    """The few-shot track: the same two files per image under <k>shot/<run>/."""
    m = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    d = V.write_vand_category(tmp_path, "candle", ["0000", "01-b.c"], [m, m], [0.5, 0.25], shots=5, run=2)
    assert d == tmp_path / "visa_challenge/5shot/2/candle/Unknown"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "visa_challenge/5shot/2/candle/Unknown/classification/0000.txt",
        "visa_challenge/5shot/2/candle/Unknown/classification/01-b.c.txt",
        "visa_challenge/5shot/2/candle/Unknown/segmentation/0000.npz",
        "visa_challenge/5shot/2/candle/Unknown/segmentation/01-b.c.npz"]
    s, seg = V.read_vand_image(tmp_path, "candle", "01-b.c", shots=5, run=2)
    assert s == 0.25 and seg.dtype == np.uint8 and seg.shape == (400, 400) and (seg[0, 0], seg[-1, -1]) == (0, 255)
    assert V.category_stems(tmp_path, "candle", shots=5, run=2) == ["0000", "01-b.c"]
    assert V.category_stems(tmp_path, "candle") is None  # nothing in the zero-shot tree
    for shots, run in ((0, 1), (-1, 0), (1, -1)):
        with pytest.raises(ValueError):
            V.vand_category_dir(tmp_path, "candle", shots=shots, run=run)

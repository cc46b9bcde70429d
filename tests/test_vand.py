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

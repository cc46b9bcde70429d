"""Shared fixtures of the lite method's tests."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import BOTTLE


@pytest.fixture(scope="package")
def bottle_set():
    """Five real bottle test images (two good, three defective) at 300 x 300, with their masks."""
    from saa.image_io import read_mask, read_rgb

    if not BOTTLE.is_dir():
        pytest.skip(f"real images missing: {BOTTLE}")
    picks = [("good", "000"), ("good", "002"), ("broken_large", "000"), ("broken_small", "000"),
             ("contamination", "000")]
    out = []
    for t, i in picks:
        img = read_rgb(BOTTLE / "test" / t / f"{i}.png")[::3, ::3].copy()  # 300 x 300: faster
        mask = np.zeros(img.shape[:2], bool) if t == "good" else \
            read_mask(BOTTLE / "ground_truth" / t / f"{i}_mask.png")[::3, ::3]
        out.append((img, mask))
    return out

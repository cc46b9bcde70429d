"""SAA+'s saliency prompt (saa.methods.saa_plus.saliency_prompt): a multi-object category with one
object falls back to single-image saliency, with a warning and no wasted feature pass."""
from __future__ import annotations

import numpy as np
import torch

from saa.methods.saa_plus.saliency_prompt import visual_saliency


def test_visual_saliency_falls_back_to_single_with_warning(caplog):
    calls = []

    def extractor(img, size):
        calls.append(size)
        g = torch.arange(3 * (size // 4) ** 2, dtype=torch.float32).reshape(1, 3, size // 4, size // 4)
        return torch.nn.functional.normalize(torch.sin(g), dim=1)

    img = np.zeros((40, 60, 3), np.uint8)
    one = np.zeros((1, 40, 60), bool)
    one[0, 5:20, 5:20] = True
    with caplog.at_level("WARNING"):
        res = visual_saliency(img, one, n_objects=4, extractor=extractor, n=5, single_size=32, multi_size=64)
    assert res.branch == "single" and "fell back" in res.note
    assert res.map.shape == (40, 60)
    assert calls == [32]  # no wasted multi-object feature pass
    assert any("fell back" in r.message for r in caplog.records)

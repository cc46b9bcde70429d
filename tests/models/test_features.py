"""The CNN feature extractor (saa.models.features): the packaged EfficientNet-Lite0 weights load
offline and give unit-length features."""
from __future__ import annotations

import numpy as np
import torch


def test_packaged_efficientnet_weights_load_offline():
    from saa.models.features import FeatureExtractor

    ex = FeatureExtractor("efficientnet_lite0", "package:efficientnet_lite0", stages=(1, 2, 3))
    f = ex(np.zeros((64, 64, 3), np.uint8), 64)
    assert f.shape[1] == sum(ex.channels) and torch.allclose(f.norm(dim=1), torch.ones(1), atol=1e-4)

"""The authors' detector schedule: the whole Grounding DINO (Swin backbone included) once per
caption. Kept to measure and verify :class:`saa.models.grounding.GroundingDetector`
(``scripts/benchmark.py --baseline``)."""
from __future__ import annotations

import numpy as np
import torch

from .grounding import DetectorOutput, GroundingDetector, normalize_caption


class FullForwardDetector(GroundingDetector):
    """Runs the full model (backbone included) for every caption, like the authors' code."""

    @torch.no_grad()
    def detect(self, caption: str) -> DetectorOutput:
        if self._image is None:
            raise RuntimeError("detect called before set_image")
        cap = normalize_caption(caption)
        out = self.model(self._image[None], captions=[cap])
        return DetectorOutput(caption=cap, input_ids=self.tokenize(cap), boxes=out["pred_boxes"][0].float().cpu(),
                              token_probs=out["pred_logits"].sigmoid()[0].float().cpu())

    @torch.no_grad()
    def set_image(self, rgb: np.ndarray) -> torch.Tensor:
        self._image = self.preprocess(rgb).to(self.device)  # the backbone runs inside every detect()
        return self._image

    @torch.no_grad()
    def set_images(self, images) -> None:
        self._slots = [self.preprocess(rgb).to(self.device) for rgb in images]
        self.use_image(0)

    def use_image(self, j: int) -> None:
        self._image = self._slots[j]

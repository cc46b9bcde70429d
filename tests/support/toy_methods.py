"""Two toy methods (cheap, no model file) that tests register as plug-ins: ``toy_brightness`` (no
references) and ``toy_colour_refs`` (scored against the other images through the generic reference
bank). The ``toy_methods`` fixture of tests/conftest.py registers both for one test."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from saa.methods import Method
from saa.methods.base import hash_of, reference_set_id
from saa.prediction import Prediction


class Brightness(Method):
    """Distance of each pixel's grey level from the image's median; no references."""

    name = "toy_brightness"
    panels = ("image", "anomaly_map")
    calls = 0

    @property
    def label(self) -> str:
        return "toy brightness method"

    def fingerprint(self, category, references=None):
        return "toy-b-" + hash_of({"out": self.config.out_size})

    def predict(self, rgb, category, *, bank=None, index=None):
        type(self).calls += 1
        grey = rgb.mean(axis=2).astype(np.float32) / 255.0
        full = np.abs(grey - np.median(grey)).astype(np.float32)
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          method=self.name, method_label=self.label, has_regions=False)


class ColourReferences(Method):
    """Each 8 x 8 colour cell against the other images' cells (the generic reference bank)."""

    name = "toy_colour_refs"
    panels = ("image", "anomaly_map")
    label_text = "toy colour references"

    @property
    def needs_references(self) -> bool:
        return True

    def fingerprint(self, category, references=None):
        data = {"toy": "colour", "out": self.config.out_size}
        if references is not None:
            data["refs"] = reference_set_id(references)
        return hash_of(data)

    @property
    def cell(self) -> int:
        """Side of the colour grid (cell x cell cells)."""
        return 8

    def image_score(self, full):
        """None: the engine's default (the max of the output-size map)."""
        return None

    def reference_features(self, rgb):
        c = self.cell
        small = torch.from_numpy(cv2.resize(rgb, (c, c), interpolation=cv2.INTER_AREA).astype(np.float32))
        return torch.nn.functional.normalize(small.permute(2, 0, 1) + 1.0, dim=0)

    def bank_settings(self):
        return {"k": 1}

    def predict(self, rgb, category, *, bank=None, index=None):
        grid = None
        if bank is not None:
            grid = bank.scores(index) if index is not None else bank.scores_for(self.reference_features(rgb))
        if grid is None:
            grid = np.zeros((self.cell,) * 2, np.float32)
        full = cv2.resize(grid, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          method=self.name, method_label=self.label_text, has_regions=False,
                          image_score=self.image_score(full))

"""Toy methods of the reference-bank tests: one with references, typed settings and a model file
(no CNN: cheap), one without references."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from saa.methods import Method, ModelFile
from saa.methods.base import hash_of
from saa.prediction import Prediction


class ToySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cell: int = 8
    weights: str = ""


class ToyRefs(Method):
    """Each cell x cell colour cell against the references' cells."""

    name = "toy_bank_refs"
    panels = ("image", "anomaly_map")
    Settings = ToySettings

    @property
    def needs_references(self) -> bool:
        return True

    def model_files(self):
        return [ModelFile("toy weights", self.settings.weights)] if self.settings.weights else []

    def reference_features(self, rgb):
        c = self.settings.cell
        small = torch.from_numpy(cv2.resize(rgb, (c, c), interpolation=cv2.INTER_AREA).astype(np.float32))
        return torch.nn.functional.normalize(small.permute(2, 0, 1) + 1.0, dim=0)

    def bank_settings(self):
        return {"k": 1}

    def predict(self, rgb, category, *, bank=None, index=None):
        grid = None
        if bank is not None:
            grid = bank.scores(index) if index is not None else bank.scores_for(self.reference_features(rgb))
        if grid is None:
            grid = np.zeros((self.settings.cell,) * 2, np.float32)
        full = cv2.resize(grid, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          method=self.name, method_label="toy references", has_regions=False,
                          image_score=float(full.max()))


class NoRefs(Method):
    name = "toy_bank_norefs"

    def fingerprint(self, category, references=None):
        return "norefs-" + hash_of({"o": self.config.out_size})

    def predict(self, rgb, category, *, bank=None, index=None):  # pragma: no cover - never called
        raise AssertionError



"""A method written in one file, as a user would write a plug-in: one typed setting, no model file,
no reference images. Registered by tests (``register()``), or, for processes the tests start
(``saa run``, torchrun, ``saa ui``), through an entry point of a package installed in a folder of
their own (:func:`install_entry_point`)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from saa.methods import Method
from saa.prediction import Prediction

NAME = "toy_blur"


class BlurSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Gaussian sigma (pixels) of the blurred image the grey level is compared with
    sigma: float = Field(3.0, gt=0.0, le=50.0)


class BlurDifference(Method):
    """|grey - blurred grey|: bright or dark specks light up."""

    name = NAME
    panels = ("image", "anomaly_map")
    Settings = BlurSettings

    @property
    def label(self) -> str:
        return f"toy blur difference (sigma {self.settings.sigma:g})"

    def predict(self, rgb, category, *, bank=None, index=None):
        grey = rgb.mean(axis=2).astype(np.float32) / 255.0
        full = np.abs(grey - cv2.GaussianBlur(grey, (0, 0), self.settings.sigma)).astype(np.float32)
        size = int(self.config.out_size)
        return Prediction(category=category, anomaly_map=cv2.resize(full, (size, size)), anomaly_map_full=full,
                          method=self.name, method_label=self.label, has_regions=False)


def register() -> None:
    from saa.methods import register_method

    register_method(BlurDifference, replace=True)


def install_entry_point(folder: Path) -> Path:
    """A folder that, on PYTHONPATH, makes ``importlib.metadata`` list this method under the entry
    point group ``saa.methods`` (what ``pip install`` of a plug-in package leaves)."""
    info = Path(folder) / "saa_toy_blur-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: saa-toy-blur\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[saa.methods]\n{NAME} = plugin_method:BlurDifference\n",
                                           encoding="utf-8")
    return Path(folder)

"""Toy methods of the reference-bank tests: one with references, typed settings and a model file
(no CNN: cheap), one without references."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from saa.methods import Method, ModelFile
from saa.methods.base import hash_of

from toy_methods import ColourReferences  # tests/support


class ToySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cell: int = 8
    weights: str = ""


class ToyRefs(ColourReferences):
    """Each cell x cell colour cell against the references' cells; typed settings and a model file."""

    name = "toy_bank_refs"
    Settings = ToySettings
    label_text = "toy references"

    @property
    def cell(self) -> int:
        return self.settings.cell

    def fingerprint(self, category, references=None):  # the default: method, settings, model files
        return Method.fingerprint(self, category, references)

    def model_files(self):
        return [ModelFile("toy weights", self.settings.weights)] if self.settings.weights else []

    def image_score(self, full):
        return float(full.max())


class NoRefs(Method):
    name = "toy_bank_norefs"

    def fingerprint(self, category, references=None):
        return "norefs-" + hash_of({"o": self.config.out_size})

    def predict(self, rgb, category, *, bank=None, index=None):  # pragma: no cover - never called
        raise AssertionError



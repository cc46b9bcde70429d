"""``saa``: SAA+ (Grounding DINO + SAM + saliency, regularised by hybrid prompts), presets
``official`` (the authors' code), ``paper`` and ``improved`` (ours: paper + cross-image saliency,
which makes the category's other images references)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ...config import CROSS_IMAGE_KEYS, SaaConfig
from ...prediction import Prediction
from ..base import Method, ModelFile, reference_set_id
from ..registry import register_method

__all__ = ["SaaMethod", "config_fingerprint", "model_files", "required_model_files"]


def config_fingerprint(config: SaaConfig, category: str, images: Optional[Sequence[str]] = None) -> str:
    """Hash of everything that changes a category's SAA+ maps (device, weights_dir and batch_size
    excluded).

    With cross-image saliency on, a map also depends on the other images of the category: pass
    their sample ``images`` keys (they are then part of the hash). With it off, the
    ``cross_image_*`` switches and ``images`` change nothing and are left out (so the hashes of
    ``official`` and ``paper`` runs are those of earlier versions).
    """
    import hashlib
    import json

    models = config.models.model_dump(mode="json")
    models.pop("device", None)
    models.pop("weights_dir", None)
    models.pop("batch_size", None)  # the maps of a batch equal those of one image at a time
    behaviour = config.resolved_behaviour().model_dump(mode="json")
    cross = bool(behaviour["cross_image_saliency"])
    if not cross:
        for key in CROSS_IMAGE_KEYS:
            behaviour.pop(key, None)
    data = {
        "behaviour": behaviour,
        "out_size": config.out_size,
        "models": models,
        "prompts": [list(p) for p in config.language_prompts(category)],
        "category": config.category(category).model_dump(mode="json"),
    }
    if cross and images is not None:
        data["cross_image_set"] = reference_set_id(images)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_files(cfg: SaaConfig) -> list[ModelFile]:
    """(what, path as configured) of every model file SAA+ needs under ``cfg`` (the Grounding DINO
    config .py is not among them: the groundingdino package's own copy stands in for it)."""
    m = cfg.models
    out = [ModelFile("Grounding DINO checkpoint", m.grounding.checkpoint),
           ModelFile("BERT text encoder folder", m.grounding.text_encoder),
           ModelFile("SAM checkpoint", m.sam.checkpoint)]
    if not str(m.saliency.checkpoint).startswith("package:"):
        out.append(ModelFile(f"saliency CNN weights, {m.saliency.backbone}", m.saliency.checkpoint))
    return out


def required_model_files(cfg: SaaConfig) -> list[str]:
    """Model files of SAA+ that ``cfg`` names but that do not exist (resolved paths)."""
    from ...settings import model_path_exists

    paths = [cfg.resolve_path(f.path) for f in model_files(cfg)]
    return [str(p) for p in paths if not model_path_exists(p)]


@register_method
class SaaMethod(Method):
    """SAA+ through :class:`~saa.methods.saa_plus.pipeline.SAAPipeline`. ``pipeline``: one whose
    models (loaded or not) are reused with this method's config.

    Its settings are the config's top-level ``preset``, ``behaviour`` and ``models`` sections and
    the categories' prompts (the layout of the authors' configs and of every published config);
    ``method_options.saa`` holds nothing."""

    name = "saa"

    def __init__(self, config: SaaConfig, pipeline=None):
        super().__init__(config)
        from .pipeline import SAAPipeline

        if pipeline is None:
            self.pipeline = SAAPipeline(config)  # models load on the first image that needs them
        else:
            self.pipeline = SAAPipeline(config, detector=pipeline._detector, refiner=pipeline._refiner,
                                        extractor=pipeline._extractor)

    @property
    def label(self) -> str:
        return f"SAA+ (preset {self.config.preset})"

    @property
    def display_name(self) -> str:
        return "the full method (SAA+)"

    @property
    def needs_references(self) -> bool:
        return self.pipeline.cross_image

    def describe(self) -> dict[str, Any]:
        m = self.config.models
        b = self.config.resolved_behaviour()
        settings = {
            "Grounding DINO": f"{m.grounding.checkpoint} (box {m.grounding.box_threshold}, text "
                              f"{m.grounding.text_threshold}, kernels {m.grounding.kernels})",
            "SAM": str(m.sam.checkpoint),
            "saliency CNN": f"{m.saliency.backbone} stages {list(m.saliency.stages)}",
            "precision": m.precision,
        }
        if b.cross_image_saliency:
            settings["cross-image saliency"] = (f"{b.cross_image_combine}, {b.cross_image_aggregate}, k "
                                                f"{b.cross_image_k}, others {b.cross_image_max_others or 'all'} "
                                                f"({b.cross_image_subset})")
        summary = {"official": "the authors' code", "paper": "the paper's formulas",
                   "improved": "ours: the paper's formulas + cross-image saliency"}.get(self.config.preset,
                                                                                      "a registered preset")
        return {"name": self.name, "label": self.label, "preset": self.config.preset, "settings": settings,
                "summary": f"SAA+ (Grounding DINO + SAM + saliency), preset {self.config.preset}: {summary}"}

    def load(self) -> "SaaMethod":
        self.pipeline.load_models()
        return self

    def model_files(self) -> list[ModelFile]:
        return model_files(self.config)

    def fingerprint(self, category: str, references: Optional[Sequence[str]] = None) -> str:
        return config_fingerprint(self.config, category, references if self.needs_references else None)

    def reference_features(self, rgb: np.ndarray):
        return self.pipeline.saliency_features(rgb)

    def reference_features_batch(self, images):
        return self.pipeline.saliency_features_batch(images)

    def bank_settings(self) -> dict[str, Any]:
        return self.pipeline.cross_image_settings()

    def predict(self, rgb: np.ndarray, category: str, *, bank=None, index: Optional[int] = None) -> Prediction:
        if bank is not None and not self.needs_references:
            bank, index = None, None
        return self.pipeline.predict(rgb, category, others=bank, index=index if bank is not None else None)

    def predict_batch(self, images, category: str, *, bank=None, indices=None) -> list[Prediction]:
        if bank is not None and not self.needs_references:
            bank, indices = None, None
        return self.pipeline.predict_batch(images, category, others=bank, indices=indices if bank is not None else None)

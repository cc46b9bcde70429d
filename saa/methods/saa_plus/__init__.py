"""Method ``saa``: SAA+ (Grounding DINO + SAM + saliency, regularised by hybrid prompts).

:mod:`.method` (the method, its fingerprint and model files), :mod:`.pipeline` (one image in named
stages), :mod:`.regularization` (the box / area / phrase filters, re-scoring, top-K, fusion: pure
maths), :mod:`.saliency_prompt` (the CNN saliency prompt at the configured size).
"""
from .method import SaaMethod, config_fingerprint, model_files, required_model_files
from .pipeline import SAAPipeline

__all__ = ["SaaMethod", "SAAPipeline", "config_fingerprint", "model_files", "required_model_files"]

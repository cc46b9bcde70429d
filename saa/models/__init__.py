"""Model wrappers: each loads one foundation model from LOCAL files and exposes one job.

- :mod:`saa.models.grounding` — Grounding DINO, text-prompted box proposals (image features cached).
- :mod:`saa.models.sam` — SAM, box prompts to masks (image embedding cached; architecture inferred).
- :mod:`saa.models.features` — a timm CNN as a dense feature extractor for the saliency prompt.
"""

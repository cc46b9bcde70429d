"""Model wrappers: each loads one foundation model from LOCAL files and exposes one job.

- :mod:`saa.models.grounding` — Grounding DINO (``groundingdino`` package), text-prompted box
  proposals (image features cached).
- :mod:`saa.models.hf_grounding` — the same model through transformers
  (``models.grounding.backend: transformers``), from the same files or a ``save_pretrained`` folder.
- :mod:`saa.models.sam` — SAM (``segment_anything``), box prompts to masks (architecture inferred).
- :mod:`saa.models.hf_sam` — SAM / SAM-HQ / SAM 2 through transformers (``models.sam.backend``).
- :mod:`saa.models.factory` — picks the backends named in the config.
- :mod:`saa.models.compat` — ``groundingdino``'s BERT wrapper under transformers 5.
- :mod:`saa.models.checkpoints` — safe checkpoint loading (``weights_only`` + explicit allow-list).
- :mod:`saa.models.features` — a timm CNN as a dense feature extractor for the saliency prompt.
"""

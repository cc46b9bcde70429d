"""The straightforward schedule of the authors' code, kept to measure and verify the fast one.

- :class:`FullForwardDetector` (:mod:`saa.models.full_forward`): the whole Grounding DINO (Swin
  backbone included) once per caption.
- :func:`self_similarity_saliency_sorted`, :func:`cross_object_saliency_loops`
  (:mod:`saa.saliency.reference`): the full sort and the per-pixel loops.

``scripts/benchmark.py --baseline`` runs these beside the default implementation in one process
and reports the speed ratio and the largest map difference.
"""
from .models.full_forward import FullForwardDetector
from .saliency.reference import cross_object_saliency_loops, self_similarity_saliency_sorted

__all__ = ["FullForwardDetector", "self_similarity_saliency_sorted", "cross_object_saliency_loops"]

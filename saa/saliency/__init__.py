"""Saliency scoring shared by the methods (SPEC §3.6) and cross-image saliency (ours), one module a
job (SAA+'s saliency prompt, which runs the CNN and brings the scores back to the image, is
:mod:`saa.methods.saa_plus.saliency_prompt`):

- :mod:`~saa.saliency.single`: single-image scoring on a feature grid (pure);
- :mod:`~saa.saliency.cross`: cross-image scoring (pure): THE k-nearest search, selection of the
  other images, pooling, the combine rules;
- :mod:`~saa.saliency.bank`: pass-1 features of a category (in memory or a :class:`FeatureStore`
  folder) and their cross-image scores (:class:`CrossImageBank`), for every method;
- :mod:`~saa.saliency.reference`: the straightforward definitions the fast ones are tested against.
"""
from .bank import CrossImageBank, FeatureStore
from .cross import (AGGREGATES, COMBINE_RULES, combine, combine_saliency, cross_image_scores, global_descriptors,
                    knn_scores, nearest_search, pool_features, select_others)
from .single import _flat, cross_object_saliency, self_similarity_saliency

__all__ = [
    "CrossImageBank", "FeatureStore", "AGGREGATES", "COMBINE_RULES", "combine", "combine_saliency",
    "cross_image_scores", "global_descriptors", "knn_scores", "nearest_search", "pool_features", "select_others",
    "cross_object_saliency", "self_similarity_saliency", "_flat",
]

"""Former location of :mod:`saa.saliency.bank` (kept so existing imports keep working)."""
from .saliency.bank import (SALIENCY_COMBINE_RULES, CrossImageBank, FeatureStore, combine_saliency,  # noqa: F401
                            knn_scores)

__all__ = ["CrossImageBank", "FeatureStore", "knn_scores", "combine_saliency", "SALIENCY_COMBINE_RULES"]

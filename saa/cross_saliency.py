"""Former location of :mod:`saa.saliency.cross` (kept so existing imports keep working)."""
from .saliency.cross import *  # noqa: F401,F403
from .saliency.cross import (AGGREGATES, COMBINE_RULES, combine, cross_image_scores, global_descriptors,  # noqa: F401
                             merge_nearest, nearest_search, pool_features, select_others)

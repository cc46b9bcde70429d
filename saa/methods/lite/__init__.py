"""Method ``lite`` (ours): :mod:`.method` (the method), :mod:`.settings` (its typed settings,
``method_options.lite``), :mod:`.features` (features of one image, its map from its scores)."""
from .features import LitePipeline
from .method import LiteMethod
from .settings import LiteSettings

__all__ = ["LiteMethod", "LiteSettings", "LitePipeline"]

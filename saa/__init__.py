"""saa: zero-shot industrial anomaly segmentation (SAA+, Segment Any Anomaly without training).

The models are only ever loaded from local files; importing saa switches the Hugging Face
libraries to offline mode so that no code path can reach a model hub at run time.
"""
import os as _os

_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

__version__ = "0.1.0"

from .errors import SaaError  # noqa: E402
from .deprecated import install as _install_moved  # noqa: E402

_install_moved()  # old import paths (saa.pipeline, saa.lite, ...) keep working one release, with a warning

__all__ = ["SaaError", "__version__"]

"""Import paths of earlier versions, kept for one release: ``import saa.pipeline`` and the like
still work, with a :class:`DeprecationWarning` naming the new place. The one table of them is
:data:`MOVED`; nothing else in the package knows the old names.

Each old module is a stand-in whose attributes are looked up in the new module(s) when first
used (so a stand-in imports nothing until it is used).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

__all__ = ["MOVED", "install"]

#: old module -> new module, or {name: new module} for an old module whose names went to several
MOVED: dict[str, object] = {
    "saa.pipeline": "saa.methods.saa_plus.pipeline",
    "saa.regularization": "saa.methods.saa_plus.regularization",
    "saa.saliency.prompt": "saa.methods.saa_plus.saliency_prompt",
    "saa.lite": "saa.methods.lite.features",
    "saa.cross_bank": "saa.saliency.bank",
    "saa.cross_saliency": "saa.saliency.cross",
    "saa.baseline": {"FullForwardDetector": "saa.models.full_forward",
                     "self_similarity_saliency_sorted": "saa.saliency.reference",
                     "cross_object_saliency_loops": "saa.saliency.reference"},
    "saa.evaluator": {
        **{n: "saa.run" for n in ("evaluate_run", "evaluate_category", "run_category", "distributed_context",
                                  "CategoryResult")},
        **{n: "saa.evaluation" for n in ("METRIC_KEYS", "METRIC_LABELS", "EVAL_OPTION_KEYS", "DEFAULT_EVAL_SIZE",
                                         "split_dataset_options", "eval_size_of", "resize_masks", "mean_metrics",
                                         "format_table")},
        **{n: "saa.results" for n in ("ImageResult", "map_file_name", "map_path", "save_image_result",
                                      "load_image_result")},
        "config_fingerprint": "saa.methods.saa_plus",
    },
}


def _stand_in(old: str, target) -> types.ModuleType:
    mod = types.ModuleType(old, f"Deprecated: moved (see saa.deprecated.MOVED[{old!r}]).")
    where = target if isinstance(target, str) else ", ".join(sorted(set(target.values())))

    def __getattr__(name: str):
        new = target if isinstance(target, str) else target.get(name)
        if new is None or name.startswith("__"):
            raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {where})")
        warnings.warn(f"{old}.{name} moved to {new}.{name}; the old import path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        value = getattr(importlib.import_module(new), name)
        setattr(mod, name, value)  # warned once per name
        return value

    mod.__getattr__ = __getattr__
    mod.__path__ = []  # so that `import saa.pipeline` as a package path does not fail oddly
    return mod


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        warnings.warn(f"module {spec.name} moved (see saa.deprecated.MOVED); the old import path goes in the "
                      "next release", DeprecationWarning, stacklevel=2)
        return _stand_in(spec.name, MOVED[spec.name])

    def exec_module(self, module):
        return None


def install() -> None:
    """Put the finder of the old paths on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())  # before any finder that could know the old file

"""Methods as plug-ins: a :class:`~saa.methods.base.Method` per folder, found by name.

Built in: ``saa`` (SAA+, presets ``official`` / ``paper`` / ``improved``; ``full`` is its old
name; :mod:`saa.methods.saa_plus`) and ``lite`` (ours: cross-image EfficientNet-Lite0 saliency, no
foundation model; :mod:`saa.methods.lite`). The registry (:mod:`saa.methods.registry`) imports a
built-in method's folder when its name is first used. A plug-in registers itself::

    from saa.methods import Method, register_method

    @register_method
    class MyMethod(Method):
        name = "mine"
        ...

or, from an installed package, with an entry point in the group ``saa.methods``
(``mine = "my_pkg.module:MyMethod"``). Then ``saa run CONFIG --method mine``.
"""
from __future__ import annotations

from .base import Method, ModelFile, NoSettings
from .registry import (ALIASES, BUILT_IN, DEFAULT_METHOD, FALLBACK_METHOD, available_methods, build_method, canonical_name,
                       check_method_options, get_method, register_method, unregister_method)

__all__ = ["Method", "ModelFile", "NoSettings", "register_method", "unregister_method", "get_method",
           "available_methods", "build_method", "canonical_name", "check_method_options", "ALIASES", "BUILT_IN",
           "DEFAULT_METHOD", "FALLBACK_METHOD"]

"""Methods as plug-ins: a registry of :class:`~saa.methods.base.Method` classes found by name.

Built in: ``saa`` (SAA+, presets ``official`` / ``paper`` / ``improved``; ``full`` is its old
name) and ``lite`` (ours: cross-image EfficientNet-Lite0 saliency, no foundation model). A
plug-in registers itself::

    from saa.methods import Method, register_method

    @register_method
    class MyMethod(Method):
        name = "mine"
        ...

or, from an installed package, with an entry point in the group ``saa.methods``
(``mine = "my_pkg.module:MyMethod"``). Then ``saa run CONFIG --method mine``.
"""
from __future__ import annotations

import difflib
import logging
from typing import Optional

from ..errors import ConfigError
from .base import Method

__all__ = ["Method", "register_method", "get_method", "available_methods", "build_method", "canonical_name"]

log = logging.getLogger("saa.methods")

_REGISTRY: dict[str, type[Method]] = {}
#: old names that keep working
ALIASES = {"full": "saa"}
_entry_points_loaded = False


def register_method(cls: Optional[type] = None, *, name: Optional[str] = None, replace: bool = False):
    """Register a :class:`Method` subclass under ``name`` (default ``cls.name``); usable as a
    decorator. Registering a taken name needs ``replace=True``."""

    def add(c: type) -> type:
        key = str(name or getattr(c, "name", "") or "").strip()
        if not key:
            raise ValueError(f"{c.__name__}: a method needs a name")
        if not (isinstance(c, type) and issubclass(c, Method)):
            raise TypeError(f"{c!r} is not a saa.methods.Method subclass")
        if key in ALIASES:
            raise ValueError(f"method name {key!r} is reserved (alias of {ALIASES[key]!r})")
        if key in _REGISTRY and _REGISTRY[key] is not c and not replace:
            raise ValueError(f"a method named {key!r} is already registered ({_REGISTRY[key].__qualname__})")
        _REGISTRY[key] = c
        return c

    return add(cls) if cls is not None else add


def unregister_method(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="saa.methods"):
        try:
            register_method(ep.load(), name=ep.name)
        except Exception as e:  # a broken plug-in must not break the built-in methods
            log.warning("method plug-in %s (%s) not loaded: %s", ep.name, ep.value, e)


def canonical_name(name: str) -> str:
    n = str(name).strip()
    return ALIASES.get(n, n)


def available_methods() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    """The class registered as ``name`` (or an alias); a :class:`ConfigError` with the choices and
    a "did you mean" otherwise."""
    key = canonical_name(name)
    if key not in _REGISTRY:
        _load_entry_points()
    try:
        return _REGISTRY[key]
    except KeyError:
        pass
    names = available_methods()
    close = difflib.get_close_matches(key, names + list(ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown method {name!r}{hint}; available: {', '.join(names)}")


def build_method(config, name: Optional[str] = None, **kwargs) -> Method:
    """An instance of the method ``name`` (default: the config's ``method``) for ``config``."""
    return get_method(name or config.method)(config, **kwargs)


# the built-in methods
from . import lite as _lite  # noqa: E402,F401
from . import saa_plus as _saa_plus  # noqa: E402,F401

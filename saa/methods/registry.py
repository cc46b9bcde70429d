"""The registry of methods: names -> :class:`~saa.methods.base.Method` classes.

Three sources, looked up in this order:

* classes registered in this process (:func:`register_method`, usable as a decorator);
* the built-in methods, :data:`BUILT_IN`: a registry name and the module that defines (and
  registers) its class, imported when the name is first asked for. A built-in method is a folder
  under ``saa/methods/`` plus ONE line here;
* installed plug-ins: entry points of the group ``saa.methods`` (``mine = "my_pkg.module:MyMethod"``).

Each method's typed settings (:attr:`Method.Settings`) are checked when it is built
(:func:`build_method`): the ``method_options`` section of a config may only name registered methods,
and each entry is validated with the method's model, with the same one-line errors as every other
key of the config.
"""
from __future__ import annotations

import difflib
import importlib
import logging
from typing import Optional

from ..config import ConfigError, SaaConfig
from .base import Method

__all__ = ["BUILT_IN", "ALIASES", "DEFAULT_METHOD", "register_method", "unregister_method", "get_method",
           "available_methods", "build_method", "canonical_name", "check_method_options", "FALLBACK_METHOD"]

log = logging.getLogger("saa.methods")

#: registry name -> module that defines the built-in method (imported on first use)
BUILT_IN: dict[str, str] = {
    "saa": "saa.methods.saa_plus",
    "lite": "saa.methods.lite",
}
#: old names that keep working
ALIASES = {"full": "saa"}
#: the method of a config that names none (and the one ``auto`` takes when its model files exist)
DEFAULT_METHOD = "saa"
#: what ``auto`` (saa demo, the web UI) takes when the default method's model files are missing:
#: a method that needs no model file to download
FALLBACK_METHOD = "lite"

_REGISTRY: dict[str, type[Method]] = {}
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
    """Every method name that :func:`get_method` finds (aliases not included)."""
    _load_entry_points()
    return sorted(set(_REGISTRY) | set(BUILT_IN))


def get_method(name: str) -> type[Method]:
    """The class registered as ``name`` (or an alias); a :class:`ConfigError` with the choices and
    a "did you mean" otherwise."""
    key = canonical_name(name)
    if key not in _REGISTRY and key in BUILT_IN:
        importlib.import_module(BUILT_IN[key])  # the module registers its class
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


def check_method_options(config: SaaConfig) -> None:
    """Every entry of ``method_options`` names a known method and is valid for its settings model
    (one :class:`ConfigError` listing the problems)."""
    for key in config.method_options:
        if canonical_name(key) not in available_methods():
            close = difflib.get_close_matches(str(key), available_methods(), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"method_options.{key}: no method named {key!r}{hint} "
                              f"(methods: {', '.join(available_methods())})")
        get_method(key).settings_from(config)


def build_method(config: SaaConfig, name: Optional[str] = None, **kwargs) -> Method:
    """An instance of the method ``name`` (default: the config's ``method``) for ``config``; its
    settings (``method_options``) are validated first."""
    cls = get_method(name or config.method)
    check_method_options(config)
    return cls(config, **kwargs)

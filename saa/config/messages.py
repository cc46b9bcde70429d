"""Pydantic validation errors -> one readable message per problem: the dotted key path, what is
allowed, the offending value, "did you mean", and the ``--set`` item a bad value came from."""
from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError



def _did_you_mean(word: Any, choices) -> str:
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean `{match[0]}`?" if match else ""


def _unwrap(tp: Any) -> Any:
    """Strip Annotated/Optional layers from a type annotation."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _keys_at(root: type[BaseModel], loc: Sequence[Any]) -> Optional[list[str]]:
    """Valid keys of the mapping at ``loc`` in the schema, or None when not a model."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
            continue
        origin = typing.get_origin(tp)
        if origin in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        elif origin in (list, tuple, Sequence):
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields) + list(getattr(tp, "extra_keys", ()))
    return None


def loc_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as a dotted key path (``models.sam[0]``; ``(top level)`` when empty)."""
    if len(loc) >= 2 and loc[-1] == "[key]":  # a mapping key itself is invalid
        return f"{loc_path(loc[:-2])} key {_short_repr(loc[-2], 60)}"
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string (quote it in YAML)",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "bool_type": "must be true or false",
}


def _short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_one(err: Mapping[str, Any], root: type[BaseModel], skip: int = 0) -> str:
    """``skip``: leading parts of the key path that lie above ``root``."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    path = loc_path(loc)
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "extra_forbidden":
        valid = _keys_at(root, loc[skip:-1]) or []
        hint = _did_you_mean(loc[-1], valid)
        listing = f" (valid keys: {', '.join(valid)})" if valid else ""
        return f"{path}: unknown key{hint}{listing}"
    if kind == "literal_error":
        return f"{path}: must be one of {ctx.get('expected', '?')} (got {_short_repr(value)})"
    if kind == "value_error":
        msg = str(ctx.get("error", err.get("msg", "")))
    elif kind in _TYPE_MESSAGES:
        msg = _TYPE_MESSAGES[kind]
    else:
        msg = str(err.get("msg", kind))
    if isinstance(value, (dict, list)) and len(repr(value)) > 120:
        return f"{path}: {msg}"
    return f"{path}: {msg} (got {_short_repr(value)})"


def _format_validation_error(
    exc: ValidationError,
    source: str,
    root: type[BaseModel],
    override_keys: Optional[Mapping[str, str]] = None,
    prefix: Sequence[str] = (),
) -> str:
    """``prefix``: the key path of ``root`` in the config (a section validated on its own)."""
    lines = []
    for err in exc.errors(include_url=False):
        if prefix:
            err = {**err, "loc": (*prefix, *err.get("loc", ()))}
        line = _format_one(err, root, len(prefix))
        path = loc_path(err.get("loc", ()))
        for key, item in (override_keys or {}).items():
            if path == key or path.startswith(key + ".") or path.startswith(key + "["):
                line += f" [from --set {item}]"
                break
        lines.append(line)
    count = len(lines)
    head = f"{source}: invalid configuration ({count} problem{'s' if count != 1 else ''}):"
    return "\n".join([head, *("  " + line for line in lines)])


def validate_section(model: type[BaseModel], data: Any, loc: Sequence[str], config: Any = None) -> BaseModel:
    """``data`` validated as ``model``; a :class:`ConfigError` in the format of every config error,
    each key path prefixed with ``loc`` (e.g. ``method_options.lite.size``). ``config``: the
    :class:`SaaConfig` the section belongs to (its file and ``--set`` items are named)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        source = getattr(config, "source", None) or "configuration"
        overrides = getattr(config, "override_items", None) or {}
        raise ConfigError(_format_validation_error(exc, source, model, overrides, prefix=tuple(loc))) from None

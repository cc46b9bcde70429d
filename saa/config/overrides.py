"""``--set dotted.key=value`` overrides (values parsed as YAML, bounded as a config file is)."""
from __future__ import annotations

import copy
import re
from typing import Any, Sequence

import yaml

from ..errors import ConfigError
from .messages import _short_repr
from .yaml_text import MAX_CONFIG_BYTES, _bounded_yaml, _yaml_error_message


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _split_override(item: str) -> tuple[list[str], str]:
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"malformed override {item!r}: expected KEY=VALUE, e.g. out_size=256")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"malformed override {item!r}: the key before '=' is empty")
    parts = key.split(".")
    if any(not part.strip() for part in parts):
        raise ConfigError(
            f"malformed override {item!r}: key {key!r} has an empty part (check the dots)"
        )
    return [part.strip() for part in parts], value


def _parse_override_value(item: str, raw: str) -> Any:
    if not raw.strip():
        return ""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"override {item[:60]!r}...: the value is longer than {MAX_CONFIG_BYTES // 2**20} MB")
    try:
        value = _bounded_yaml(raw, f"override {_short_repr(item, 80)}")
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({_yaml_error_message(exc)})"
        ) from None
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        value = float(value)  # YAML 1.1 reads `1e-3` as a string
    return value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``data`` with each ``a.b.c=value`` applied (value parsed as YAML)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    result = copy.deepcopy(dict(data))
    for item in overrides:
        parts, raw = _split_override(item)
        value = _parse_override_value(item, raw)
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"override {item!r}: `{where}` is {child!r}, not a mapping, so it has no "
                    f"key `{parts[depth + 1]}`"
                )
            node = child
        node[parts[-1]] = value
    return result


def _override_keys(overrides: Sequence[str]) -> dict[str, str]:
    keys = {}
    for item in overrides if not isinstance(overrides, str) else [overrides]:
        try:
            parts, _ = _split_override(item)
        except ConfigError:
            continue
        keys[".".join(parts)] = item
    return keys



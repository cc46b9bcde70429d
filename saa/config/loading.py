"""Reading a config: a YAML file (or a dict) with ``--set`` overrides, validated into a
:class:`SaaConfig`; every problem one :class:`ConfigError` naming the file and the key path."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .messages import _format_validation_error
from .overrides import _override_keys, apply_overrides
from .schema import SaaConfig
from .yaml_text import _bounded_yaml, _read_config_text, _yaml_error_message

def load_config(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> SaaConfig:
    """Read a YAML config, apply ``--set`` overrides (``a.b.c=value``) and validate."""
    path = Path(path)
    try:
        text = _read_config_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a folder, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = _bounded_yaml(text, str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error at {_yaml_error_message(exc)}") from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys to values, "
            f"got a {type(data).__name__}"
        )
    data = _weights_dir_from_file(data, path)
    cfg = config_from_dict(data, overrides, source=str(path))
    wd = cfg.models.weights_dir
    if wd is not None and not wd.startswith("~") and not Path(wd).is_absolute():
        # set with --set: relative to the current directory, fixed now (a run's config.yaml then
        # names the same folder from anywhere)
        cfg.models.weights_dir = os.path.normpath(Path.cwd() / wd)
    return cfg


def _weights_dir_from_file(data: dict, path: Path) -> dict:
    """``models.weights_dir`` of a config file made absolute against the file's folder (a copy of
    ``data``; values that are not a relative path are left for validation)."""
    models = data.get("models")
    wd = models.get("weights_dir") if isinstance(models, dict) else None
    if not isinstance(wd, str) or not wd.strip() or "\x00" in wd or wd.startswith("~") or Path(wd).is_absolute():
        return data
    base = path.expanduser().resolve().parent
    return {**data, "models": {**models, "weights_dir": os.path.normpath(base / wd)}}


def config_from_dict(
    data: Mapping[str, Any], overrides: Sequence[str] = (), source: str = "<dict>"
) -> SaaConfig:
    """Validate a config given as a dict (after applying ``overrides``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(data).__name__}")
    data = apply_overrides(dict(data), overrides)
    try:
        cfg = SaaConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            _format_validation_error(exc, source, SaaConfig, _override_keys(overrides))
        ) from None
    return cfg.with_source(source, _override_keys(overrides))



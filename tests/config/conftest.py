"""Helpers of the config tests, handed to tests by name: ``minimal`` (the smallest valid config
dict, one category), ``write`` (a YAML file in tmp_path), ``error_of`` (the message of the
ConfigError a call raises)."""
from __future__ import annotations

from pathlib import Path

import pytest

from saa.errors import ConfigError


def minimal(**category) -> dict:
    cat = dict(object="thing,", n_objects=1, k_mask=5, area_ratio=0.5)
    cat.update(category)
    return {"categories": {"thing": cat}}


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return str(info.value)


@pytest.fixture(scope="session", name="minimal")
def _minimal_fixture():
    return minimal


@pytest.fixture(scope="session", name="write")
def _write_fixture():
    return write


@pytest.fixture(scope="session", name="error_of")
def _error_of_fixture():
    return error_of

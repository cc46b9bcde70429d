"""Shared fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight model files (saa.testing), built once per test session (~10 s on a CPU)."""
    from saa.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"), seed=0)

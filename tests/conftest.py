"""Shared fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight model files (saa.testing), built once per test session (~10 s on a CPU)."""
    from saa.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"), seed=0)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """The suite runs offline: any attempt to open a network connection fails loudly."""
    import socket

    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, address)
        raise AssertionError(f"test tried to open a network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, *a, **k: (_ for _ in ()).throw(
                            AssertionError(f"test tried to open a network connection to {address!r}")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

"""Shared fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight model files (saa.testing), built once per test session (~10 s on a CPU)."""
    from saa.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"), seed=0)


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch, tmp_path_factory):
    """No test reads the real per-user settings file (the weights folder install.sh recorded) or a
    weights folder of the shell: model files are looked up where each test says."""
    monkeypatch.setenv("SAA_SETTINGS", str(tmp_path_factory.getbasetemp() / "no_user_settings.json"))
    monkeypatch.delenv("SAA_WEIGHTS_DIR", raising=False)


LOCALHOST = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, request):
    """The suite runs offline: any attempt to open a network connection fails loudly.

    Tests marked ``allow_localhost`` (the web UI test: a local server and browser driver) may
    connect to 127.0.0.1 / localhost / ::1, and only there.
    """
    import socket

    real_connect = socket.socket.connect
    real_create = socket.create_connection
    local_ok = request.node.get_closest_marker("allow_localhost") is not None

    def is_local(address) -> bool:
        return local_ok and isinstance(address, tuple) and str(address[0]) in LOCALHOST

    def guarded(self, address):
        if self.family == getattr(socket, "AF_UNIX", None) or is_local(address):
            return real_connect(self, address)
        raise AssertionError(f"test tried to open a network connection to {address!r}")

    def guarded_create(address, *a, **k):
        if is_local(address):
            return real_create(address, *a, **k)
        raise AssertionError(f"test tried to open a network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection", guarded_create)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

"""The suite's own guards (tests/conftest.py): no test reaches the network."""
from __future__ import annotations

import socket

import pytest


def test_network_is_blocked_in_tests():
    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("example.com", 80), timeout=1)


def test_parallel_workers_share_the_cores(monkeypatch):
    """Under pytest-xdist each of N workers computes with cpu_count // N threads, and so do the
    processes it starts (OMP_NUM_THREADS); without workers nothing changes."""
    import os

    import torch

    from tests.conftest import _share_the_cores_between_workers

    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)
    try:
        _share_the_cores_between_workers()  # not a worker: untouched
        assert "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() == before
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
        _share_the_cores_between_workers()
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "2"
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "16")  # more workers than cores: one thread each
        _share_the_cores_between_workers()
        assert os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_free_port_can_be_bound():
    from tests.conftest import free_port

    port = int(free_port())
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))

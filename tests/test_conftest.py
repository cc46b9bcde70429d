"""The suite's own guards (tests/conftest.py): no test reaches the network."""
from __future__ import annotations

import socket

import pytest


def test_network_is_blocked_in_tests():
    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("example.com", 80), timeout=1)

"""The test suite runs offline: conftest's ``refuse_network`` turns any connection to another machine into an error,
so a code path that would download (a model hub, a weight URL) fails its test instead of quietly fetching."""

from __future__ import annotations

import socket

import pytest


def test_a_connection_to_another_machine_is_refused():
    with pytest.raises(OSError, match="refuses network connections"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)  # TEST-NET-1: never routed anywhere
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock, \
            pytest.raises(OSError, match="refuses network connections"):
        sock.connect_ex(("2001:db8::1", 443, 0, 0))


def test_loopback_stays_open_for_local_servers():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1):
            pass

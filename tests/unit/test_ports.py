"""apps.broker.free_port: ports for processes a test or the bench starts."""

from __future__ import annotations

import socket

from apps.broker import _ephemeral_ports, free_port, port_is_free


def test_free_ports_are_outside_the_range_of_outgoing_connections_and_never_repeat():
    low, high = _ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not any(low <= p <= high for p in ports)
    assert all(port_is_free("127.0.0.1", p) for p in ports)


def test_a_port_something_listens_on_is_not_free():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        assert not port_is_free("127.0.0.1", s.getsockname()[1])

"""free_port never gives the same port twice in one process, even when the kernel would."""

from __future__ import annotations

import socket

from reconciler.devtools import processes


def test_a_port_the_kernel_offers_again_is_not_given_twice(monkeypatch):
    offered = iter([40001, 40001, 40002])  # the kernel hands the same free port to two probes

    class Probe(socket.socket):
        def getsockname(self):
            return ("127.0.0.1", next(offered))

    monkeypatch.setattr(processes.socket, "socket", Probe)
    monkeypatch.setattr(processes, "_GIVEN", set())
    assert [processes.free_port(), processes.free_port()] == [40001, 40002]


def test_many_ports_in_a_row_are_distinct_and_bindable():
    ports = [processes.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", ports[-1]))

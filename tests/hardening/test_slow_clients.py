"""Item 1 of issue 14: slow or idle connections must not lock everyone out of `pacecds serve`.

A real `pacecds serve` (gunicorn, 2 workers x 4 threads) on loopback; an attacker holds many sockets open
(nothing sent, or a slowloris sending one header line at a time); `GET /cds-services` must still answer
within a few seconds. Bounded: every socket has a timeout, every loop a count and a deadline.
"""
from __future__ import annotations

import socket
import time
from contextlib import ExitStack
from urllib.parse import urlsplit

import pytest

from tests.service.test_serve import start, stop

PROBE_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base, proc = start(tmp_path_factory.mktemp("slow"))
    yield base
    stop(proc)


def _address(base: str) -> tuple[str, int]:
    u = urlsplit(base)
    return u.hostname or "127.0.0.1", u.port or 80


def probe(base: str) -> float:
    """Seconds for one GET /cds-services on a fresh connection (raises on timeout or a non-200)."""
    started = time.monotonic()
    with socket.create_connection(_address(base), timeout=PROBE_TIMEOUT_S) as s:
        s.settimeout(PROBE_TIMEOUT_S)
        s.sendall(b"GET /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        deadline = started + PROBE_TIMEOUT_S
        while time.monotonic() < deadline and len(data) < 1_000_000:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return time.monotonic() - started


def _idle_sockets(stack: ExitStack, base: str, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = stack.enter_context(socket.create_connection(_address(base), timeout=2))
        out.append(s)
    return out


def _probes(base: str, n: int = 5, pause: float = 0.5) -> list[float]:
    times = []
    for _ in range(n):
        try:
            times.append(probe(base))
        except (OSError, AssertionError):
            times.append(float("inf"))
        time.sleep(pause)
    return times


def test_100_idle_sockets_do_not_lock_out_discovery(served):
    with ExitStack() as stack:
        _idle_sockets(stack, served, 100)
        time.sleep(0.5)  # let the workers accept them
        times = _probes(served)
    assert max(times) < PROBE_TIMEOUT_S, times


def test_slowloris_header_drip_does_not_lock_out_discovery(served):
    with ExitStack() as stack:
        socks = _idle_sockets(stack, served, 64)
        for s in socks:
            s.sendall(b"GET /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        times = []
        deadline = time.monotonic() + 8
        for i in range(6):  # one header line per socket every ~1 s, probing in between
            if time.monotonic() > deadline:
                break
            for s in socks:
                try:
                    s.sendall(b"X-Drip-%d: x\r\n" % i)
                except OSError:
                    pass  # the server hung up on this one: that is allowed
            times.append(_probes(served, n=1, pause=0)[0])
            time.sleep(0.5)
    assert times and max(times) < PROBE_TIMEOUT_S, times


def test_kept_alive_connection_serves_a_second_request_read_in_pieces(served):
    """The head of a kept-alive connection's next request is read by the main loop too, even in pieces."""
    with socket.create_connection(_address(served), timeout=PROBE_TIMEOUT_S) as s:
        s.settimeout(PROBE_TIMEOUT_S)
        answers = []
        for _ in range(2):
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            time.sleep(0.2)
            s.sendall(b"Host: 127.0.0.1\r\n\r\n")
            data = b""
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while b'"status"' not in data and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            answers.append(data)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers

"""Item 1 of issue 14: slow or idle connections must not lock everyone out of `pacecds serve`.

A real `pacecds serve` (gunicorn, 2 workers x 4 threads) on loopback; an attacker holds many sockets open
(nothing sent, or a slowloris sending one header line at a time); `GET /cds-services` must still answer
within a few seconds. Bounded: every socket has a timeout, every loop a count and a deadline.
"""
from __future__ import annotations

import json
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


def test_item1_100_idle_sockets_do_not_lock_out_discovery(served):
    with ExitStack() as stack:
        _idle_sockets(stack, served, 100)
        time.sleep(0.5)  # let the workers accept them
        times = _probes(served)
    assert max(times) < PROBE_TIMEOUT_S, times


def test_item1_slowloris_header_drip_does_not_lock_out_discovery(served):
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


def test_item1_slow_body_drip_does_not_lock_out_discovery(served):
    """A R.U.D.Y. variant: whole heads announcing a 1000-byte JSON body, then one byte per socket every ~0.5 s."""
    with ExitStack() as stack:
        socks = _idle_sockets(stack, served, 24)
        for s in socks:
            s.sendall(b"POST /cds-services/pacing-review HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        times = []
        deadline = time.monotonic() + 8
        for _ in range(6):
            if time.monotonic() > deadline:
                break
            for s in socks:
                try:
                    s.sendall(b" ")
                except OSError:
                    pass
            times.append(_probes(served, n=1, pause=0)[0])
            time.sleep(0.5)
    assert times and max(times) < PROBE_TIMEOUT_S, times


def test_item1_post_bodies_arriving_in_pieces_are_answered(served):
    body = b'{"hook": "patient-view"}'
    head = (b"POST /cds-services/pacing-review HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    answer = _raw(served, head, body_iter=[body[:5], body[5:]])
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]  # read whole: a schema error, not a timeout
    assert b"hookInstance" in answer or b"required" in answer


def test_item1_kept_alive_connection_serves_a_second_request_read_in_pieces(served):
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


def _raw(base: str, request: bytes, *, body_iter=(), timeout: float = 5.0) -> bytes:
    with socket.create_connection(_address(base), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(request)
        try:
            for part in body_iter:
                s.sendall(part)
        except OSError:
            pass  # the server may answer and close before the whole body is sent
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(data) < 1_000_000:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_item7_chunked_body_over_the_limit_is_413_from_the_real_server(served):
    """PACECDS_MAX_BODY_BYTES is 5 MiB by default: 6 MiB in chunks is refused, as with Content-Length."""
    piece = b"x" * 65536
    chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(96))
    head = (b"POST /cds-services/pacing-review HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    answer = _raw(served, head, body_iter=[b'a\r\n{"hook": "\r\n', *chunks, b"0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"OperationOutcome"' in answer


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"414"),
    (b"GET /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", b"400"),
], ids=["header-too-large", "request-line-too-long", "malformed-header"])
def test_item7_errors_gunicorn_raises_itself_are_operation_outcomes(served, request_bytes, status):
    answer = _raw(served, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status), answer[:300]
    assert b"application/json" in head
    assert json.loads(body)["resourceType"] == "OperationOutcome"

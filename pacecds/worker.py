"""The gunicorn worker `pacecds serve` runs: gthread, with the request head read in the main loop.

gunicorn's gthread worker hands every new connection to a thread, which waits up to 5 s for a first byte and
then blocks, with no deadline, until the request line and headers are complete. 100 idle sockets, or 64 clients
sending one header line every few seconds, therefore held every thread of every worker and locked all callers
out (issue 14, item 1). This worker:

- reads the request line and headers in the worker's main loop (non-blocking, no thread), for new and kept-alive
  connections alike, and gives the connection to a thread only once the whole head is there (or it is too large
  for gunicorn's own limits, which then answer 400/431), and, for a body with a Content-Length of at most
  MAX_BUFFERED_BODY, once the whole body is there too;
- closes a connection whose head is not complete `HEAD_TIMEOUT_S` after its first wait began (idle or dripping);
- ends the body read of a request that is still not complete `REQUEST_TIMEOUT_S` after its head began, by
  shutting the socket's read side, so a client dripping its body holds a thread for a bounded time.

An idle or slow connection costs a file descriptor and a few bytes, never a thread. How many such connections
one worker keeps is gunicorn's `worker_connections`; beyond it, a reverse proxy in front (docs/security.md) is
what limits connections per client.
"""
from __future__ import annotations

import errno
import re
import selectors
import socket
import time
from functools import partial

import orjson
from gunicorn import util as gunicorn_util
from gunicorn.workers.gthread import TConn, ThreadWorker

from service.errors import operation_outcome

HEAD_TIMEOUT_S = 10.0      # request line + headers, from the first wait on a connection
REQUEST_TIMEOUT_S = 30.0   # head + body, from the first wait
HEAD_END = b"\r\n\r\n"
MAX_BUFFERED_BODY = 8 * 1024 * 1024          # larger bodies are read by a thread (they get 413 anyway by default)
MAX_BUFFERED_PER_WORKER = 64 * 1024 * 1024   # bodies being buffered at once by one worker's main loop
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*(?=\r\n)", re.I)
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.I)
_EXPECT = re.compile(rb"\r\nexpect[ \t]*:", re.I)


def write_operation_outcome(sock, status_int, reason, mesg):
    """gunicorn's own error answers (a request line or headers too long or malformed, a bad chunked body),
    as the OperationOutcome JSON every other pacecds error is, instead of gunicorn's HTML page. The message
    names the problem only: gunicorn's text quotes the offending input back."""
    body = orjson.dumps(operation_outcome(int(status_int), f"{status_int} {reason}: the request was refused by "
                                                           f"the HTTP server (see docs/security.md)"))
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class PacecdsWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # In this worker process only: gunicorn's error pages become OperationOutcome JSON (issue 14, item 7).
        gunicorn_util.write_error = write_operation_outcome
        self._head_limit = (self.cfg.limit_request_line + 2
                            + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2) + 2)
        self._inflight: dict[TConn, float] = {}  # connections a thread is reading: body deadline
        self._body_wait: dict[TConn, float] = {}  # connections whose body the main loop is reading: deadline
        self._reserved = 0                         # body bytes the main loop has committed to buffer

    # ------------------------------------------------------------------ waiting for a whole head, no thread
    def accept(self, listener):
        if self.cfg.is_ssl:  # TLS is the proxy's job; with gunicorn's own TLS keep its reading as it is
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        self._wait_head(conn)

    def on_client_socket_readable(self, conn, client):
        if self.cfg.is_ssl:
            return super().on_client_socket_readable(conn, client)
        # A kept-alive connection: its next request's head is read here too.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._wait_head(conn)

    def _wait_head(self, conn: TConn) -> None:
        conn.head = bytearray()
        conn.need = None        # bytes to buffer in all (head + body) once the head is known to have a body
        conn.reserved = 0
        conn.started = time.monotonic()
        conn.timeout = conn.started + HEAD_TIMEOUT_S  # gunicorn's murder_pending closes it after that
        conn.sock.setblocking(False)
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))

    def _on_head_readable(self, conn: TConn, client) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            conn.head += data
            if conn.need is None:
                end = conn.head.find(HEAD_END)
                if end < 0 and len(conn.head) <= self._head_limit:
                    return  # not complete yet: keep waiting, without a thread
                body = self._body_to_buffer(bytes(conn.head[:end + 4])) if end >= 0 else 0
                if body:
                    # A body of known, moderate length is read here too (a client dripping it holds no thread)
                    # until REQUEST_TIMEOUT_S after the head began.
                    conn.need = end + 4 + body
                    conn.reserved = body
                    self._reserved += body
                    self.pending_conns.remove(conn)
                    self._body_wait[conn] = conn.started + REQUEST_TIMEOUT_S
            if conn.need is not None and len(conn.head) < conn.need:
                return
        self._stop_waiting(conn, client)
        if not data:  # the client closed (or reset) before sending a whole request
            self.nr_conns -= 1
            conn.close()
            return
        conn.data_ready = True
        self._inflight[conn] = conn.started + REQUEST_TIMEOUT_S
        self.enqueue_req(conn)

    def _stop_waiting(self, conn: TConn, client) -> None:
        self.poller.unregister(client)
        if self._body_wait.pop(conn, None) is None:
            self.pending_conns.remove(conn)
        self._reserved -= conn.reserved
        conn.reserved = 0

    def _body_to_buffer(self, head: bytes) -> int:
        """How many body bytes to read before a thread is used: the Content-Length of a plain request body that
        fits the per-request and per-worker bounds; 0 (a thread reads it, within REQUEST_TIMEOUT_S) for a
        chunked body, an `Expect: 100-continue` (the client waits for our answer first), or anything else."""
        if _TRANSFER_ENCODING.search(head) or _EXPECT.search(head):
            return 0
        lengths = _CONTENT_LENGTH.findall(head)
        if len(lengths) != 1:
            return 0  # none, or several (gunicorn refuses those itself)
        length = int(lengths[0])
        if length > MAX_BUFFERED_BODY or self._reserved + length > MAX_BUFFERED_PER_WORKER:
            return 0
        return length

    def handle(self, conn):
        head = getattr(conn, "head", None)
        if head:
            conn.head = None
            conn.sock.setblocking(True)
            conn.init()  # the HTTP/1 parser (a kept-alive connection already has one)
            conn.parser.unreader.unread(bytes(head))
        return super().handle(conn)

    # ------------------------------------------------------------------ bounded body reads
    def finish_request(self, conn, fs):
        self._inflight.pop(conn, None)
        return super().finish_request(conn, fs)

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self._body_wait.items()):
            if now > deadline:  # a body still not complete REQUEST_TIMEOUT_S after its head began
                self._stop_waiting(conn, conn.sock)
                self.nr_conns -= 1
                conn.close()
        for conn, deadline in list(self._inflight.items()):
            if now > deadline:
                del self._inflight[conn]
                try:  # the thread's blocked read returns end-of-file; writing the answer still works
                    conn.sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

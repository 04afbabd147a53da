"""The JWT replay (jti) store in the audit database, shared by every host that uses it.

With PACECDS_DATABASE_URL naming one PostgreSQL for several `pacecds serve` hosts, a token accepted by one host
must be refused by all the others: each accepted (iss, jti) is kept in `pacecds_jti` until the token expires.
One statement inserts it if absent, or replaces an expired entry, and says which happened; two hosts racing on
the same jti are ordered by the primary key, so exactly one of them accepts the token.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa

from .store import jti_table

PURGE_INTERVAL_S = 60.0


class DatabaseReplayStore:
    """`add(iss, jti, expires_at)` is True the first time (and again once the entry expired), else False."""

    def __init__(self, engine: sa.Engine, *, clock=time.time):
        self.engine = engine
        self.dialect = engine.dialect.name
        self.clock = clock
        self._lock = threading.Lock()
        self._next_purge = 0.0
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        else:
            raise ValueError(f"no atomic insert-if-absent for database {self.dialect!r}")
        self._insert: Any = insert

    def add(self, iss: str, jti: str, expires_at: float) -> bool:
        now = self.clock()
        stmt = self._insert(jti_table).values(iss=iss, jti=jti, expires_at=float(expires_at))
        stmt = stmt.on_conflict_do_update(
            index_elements=[jti_table.c.iss, jti_table.c.jti],
            set_={"expires_at": stmt.excluded.expires_at},
            where=jti_table.c.expires_at <= now,      # only an expired entry is replaced
        ).returning(jti_table.c.jti)
        with self.engine.connect().execution_options(pacecds_write=True) as conn:
            with conn.begin():
                accepted = conn.execute(stmt).first() is not None
        self._purge(now)
        return accepted

    def _purge(self, now: float) -> None:
        with self._lock:
            if now < self._next_purge:
                return
            self._next_purge = now + PURGE_INTERVAL_S
        with self.engine.connect().execution_options(pacecds_write=True) as conn:
            with conn.begin():
                conn.execute(jti_table.delete().where(jti_table.c.expires_at <= now))

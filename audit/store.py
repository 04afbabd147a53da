"""The decision log: an append-only, hash-chained store over SQLAlchemy.

Guarantees
- `record_evaluation` and `record_feedback` return only after the transaction has
  committed (SQLite: WAL with synchronous=FULL, or NORMAL if PACECDS_AUDIT_SQLITE_SYNCHRONOUS says so;
  PostgreSQL: synchronous commit, set for each append transaction),
  so a caller that returns a card after them never returns a card without its record.
- Every record carries the SHA-256 of the previous record (over its canonical JSON),
  and a one-row chain head holds the last sequence number and hash. Appends are
  serialised on that head: SQLite takes the write lock up front (BEGIN IMMEDIATE), after the
  writers of the file queued on a file lock; PostgreSQL locks the head row (SELECT ... FOR
  UPDATE), which also serialises several service replicas sharing one database. The lock is
  held from reading the head to the commit only: records are scrubbed and serialised before
  it, and records that arrive while a commit runs are committed together in the next
  transaction (group commit).
- `verify` recomputes the chain and names the first record that was changed,
  inserted or deleted. The chain detects edits by anyone who cannot also rewrite
  every later record and the head; `verify` prints the head hash so that auditors can
  keep it outside the database and compare (`--expect-head`).
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy import event

from . import config
from .record import (
    GENESIS_HASH,
    RECORD_FORMAT,
    TIME_RE,
    canonical_json,
    chain_hash,
    compact_record,
    expand_record,
    scrub,
    seal,
    seal_key,
    utc_now,
)

metadata = sa.MetaData()

chain_head = sa.Table(
    "audit_chain_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

records = sa.Table(
    "audit_record", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("recorded_at", sa.String(32), nullable=False),
    sa.Column("hook_instance", sa.Text),
    sa.Column("hook", sa.Text),
    sa.Column("service_id", sa.Text),
    sa.Column("patient_key", sa.String(64)),
    sa.Column("card_uuid", sa.Text),
    sa.Column("feedback_key", sa.String(64), unique=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("seal", sa.String(64)),  # HMAC(seal key, seq + hash); the key is not in the database
)

cards = sa.Table(
    "audit_card", metadata,
    sa.Column("card_uuid", sa.Text, nullable=False, index=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # derived index, no FK: records are the truth
    sa.Column("rule_id", sa.Text),
    sa.Column("rule_version", sa.Text),
    sa.PrimaryKeyConstraint("card_uuid", "seq"),
)

# Accepted JWT ids until they expire, shared by every host on the database (see audit.replay).
jti_table = sa.Table(
    "pacecds_jti", metadata,
    sa.Column("iss", sa.Text, nullable=False),
    sa.Column("jti", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.PrimaryKeyConstraint("iss", "jti"),
)

# Columns copied out of the body for indexing; verify checks they still agree with it.
_INDEXED = {
    "kind": "type", "recorded_at": "time", "hook_instance": "hookInstance", "hook": "hook",
    "service_id": "serviceId", "patient_key": "patientKey", "card_uuid": "card",
}
_MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
_ADVISORY_LOCK_ID = 0x70616365  # "pace": serialises concurrent migrations on PostgreSQL
VERSION_TABLE = "pacecds_audit_alembic_version"
_UNSEALED_REVISIONS = ("0001", "0002")  # schemas before record seals


@dataclass
class Problem:
    seq: int | None
    kind: str        # changed | inserted | deleted
    detail: str

    def __str__(self) -> str:
        where = f"record {self.seq}" if self.seq is not None else "log"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    problems: list[Problem] = field(default_factory=list)
    seals_checked: bool = True   # False: no audit key, only the hash chain and the tables were checked

    @property
    def first_bad(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "records": self.records, "head": {"seq": self.head_seq, "hash": self.head_hash},
                "seals_checked": self.seals_checked,
                "problems": [vars(p) for p in self.problems],
                "first_bad": vars(self.first_bad) if self.first_bad else None}


class NoDecisionLog(Exception):
    """A reader found no decision log where it looked (readers never create one)."""


def driver_url(url: str) -> str:
    """postgres:// and postgresql:// URLs use psycopg (3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names (None for an in-memory database)."""
    u = sa.engine.make_url(url)
    path = u.database
    if path and path.startswith("file:") and str(u.query.get("uri", "")).lower() in ("true", "1"):
        path = path[len("file:"):].split("?", 1)[0]
        if "mode=memory" in (u.database or ""):
            return None
    if not path or path == ":memory:":
        return None
    return path


def _sqlite_engine(url: str) -> sa.Engine:
    path = _sqlite_path(url)
    if path and not os.path.exists(path):
        # Lab values and medication names: readable by the owner only. SQLite gives its -wal and -shm files
        # the database file's permissions.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    sync = config.sqlite_synchronous()  # checked before the first connection: a typo fails the start
    eng = sa.create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(eng, "connect")
    def _connect(dbapi_conn, _rec):
        # We issue BEGIN ourselves so that writers can take the lock up front.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={sync}")  # FULL: durable at COMMIT, not just crash-safe (see config)
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(eng, "begin")
    def _begin(conn):
        # Readers use a deferred transaction so `verify` and `stats` never block the service.
        if conn.get_execution_options().get("pacecds_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return eng


class AuditStore:
    def __init__(self, engine: sa.Engine, *, key: bytes | None = None):
        self.engine = engine
        self.dialect = engine.dialect.name
        self._key = key
        self._seal_key: bytes | None = None
        self._create_key = True  # open_existing (readers) never creates a key file
        # A store opened before a fork (gunicorn --preload) must not share pooled
        # connections with its children: the child drops them without closing.
        ref = weakref.ref(engine)
        os.register_at_fork(after_in_child=lambda: (e := ref()) is not None and e.dispose(close=False))

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_config(cls, url: str | None = None, *, schema: str | None = None,
                    key: bytes | None = None, migrate: bool = True) -> "AuditStore":
        """Open (and migrate to the latest schema) the store named by `url`,
        else PACECDS_DATABASE_URL, else SQLite at var/pacecds-audit.db.
        `schema` puts the tables in a PostgreSQL schema (created if missing)."""
        url = driver_url(config.database_url(url))
        if url.startswith("sqlite"):
            eng = _sqlite_engine(url)
        else:
            kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if schema:
                kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
            eng = sa.create_engine(url, **kwargs)
            if schema:
                with eng.begin() as conn:
                    # IF NOT EXISTS still races between processes: serialise on the migration lock.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_ID})
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        store = cls(eng, key=key)
        if migrate:
            store.migrate()
        return store

    @classmethod
    def open_existing(cls, url: str | None = None) -> "AuditStore":
        """Open the store that from_config(url) names, for reading only: never create the var/
        directory, a SQLite file, the tables or the audit key. Raises NoDecisionLog when no log
        is there (a missing or empty SQLite file, a database without the audit tables)."""
        url = driver_url(config.database_url(url, create=False))
        where = config.describe_url(url)
        if url.startswith("sqlite"):
            path = _sqlite_path(url)
            if path is None or not os.path.isfile(path):
                raise NoDecisionLog(f"no decision log at {where}")
            if os.path.getsize(path) == 0:
                raise NoDecisionLog(f"no decision log in {where} (the file is empty)")
            eng = _sqlite_engine(url)
        else:
            eng = sa.create_engine(url, pool_pre_ping=True)
        store = cls(eng)
        store._create_key = False
        try:
            with eng.connect() as conn:
                insp = sa.inspect(conn)
                missing = [t for t in (records.name, chain_head.name, cards.name) if not insp.has_table(t)]
        except BaseException:
            store.close()
            raise
        if missing:
            store.close()
            raise NoDecisionLog(f"no decision log in {where}: it has no table {', '.join(missing)}")
        return store

    def migrate(self, revision: str = "head") -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", _MIGRATIONS)
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_ID})
            before = self._revision(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            if before in _UNSEALED_REVISIONS and self._revision(conn) not in _UNSEALED_REVISIONS:
                self._seal_legacy_records(conn)

    @staticmethod
    def _revision(conn) -> str | None:
        from alembic.runtime.migration import MigrationContext
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

    def _seal_legacy_records(self, conn) -> None:
        """Seal the records written before seals existed, once, in the transaction that adds the seal column
        (under the migration lock). A seal on such a record says only that it was in the log at the upgrade."""
        key = self.seal_key
        rows = conn.execute(sa.select(records.c.seq, records.c.hash).where(records.c.seal.is_(None))).all()
        for row in rows:
            conn.execute(records.update().where(records.c.seq == row.seq).values(seal=seal(key, row.seq, row.hash)))

    @staticmethod
    def head_revision() -> str:
        """The newest schema revision this pacecds ships."""
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        cfg = Config()
        cfg.set_main_option("script_location", _MIGRATIONS)
        return ScriptDirectory.from_config(cfg).get_current_head()

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext
        with self.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = config.load_audit_key(create=self._create_key)
        return self._key

    @property
    def seal_key(self) -> bytes:
        """Derived from the audit key (PACECDS_AUDIT_KEY or the key file): never stored in the database."""
        if self._seal_key is None:
            self._seal_key = seal_key(self.key)
        return self._seal_key

    def close(self) -> None:
        self.engine.dispose()

    # ---- writing ----------------------------------------------------------------
    def _write(self):
        conn = self.engine.connect().execution_options(pacecds_write=True)
        return _WriteTxn(conn, self._writer_lock())

    def _writer_lock(self) -> "_FileLock | None":
        """SQLite: writers of this file queue on an advisory file lock (fcntl.flock, one per process) before they
        ask SQLite for its write lock, so a waiting writer sleeps in the kernel and wakes as soon as the lock is
        free, instead of polling with SQLite's busy handler (sleeps of up to 100 ms each). None elsewhere."""
        if self.dialect != "sqlite":
            return None
        lock = self.__dict__.get("_flock")
        if lock is None or lock.pid != os.getpid():
            path = _sqlite_path(self.engine.url.render_as_string(False))
            lock = self.__dict__["_flock"] = _FileLock(path + ".writer-lock") if path else None
        return lock

    def _lock_head(self, conn) -> tuple[int, str]:
        q = sa.select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)
        if self.dialect == "postgresql":
            # Durable at COMMIT even if the server or role was configured with synchronous_commit=off.
            conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            raise RuntimeError("the decision log's chain head row is missing: nothing can be appended "
                               "(run `pacecds audit verify`)")
        return int(row.seq), row.hash

    @staticmethod
    def _log_time(conn, head_seq: int, wanted: Any = None) -> str:
        """The time a record enters the log: `wanted` (else now), but never before the previous record's time,
        so that times never go backwards along the chain, whatever the clocks of several writers say."""
        t = wanted if isinstance(wanted, str) and TIME_RE.match(wanted) else utc_now()
        if head_seq > 0:
            last = conn.execute(sa.select(records.c.recorded_at).where(records.c.seq == head_seq)).scalar()
            if isinstance(last, str) and TIME_RE.match(last) and last > t:
                t = last
        return t

    def _append(self, conn, seq: int, prev: str, body: dict, *, feedback_key: str | None = None) -> str:
        text = canonical_json(body)
        h = chain_hash(prev, text)
        values = {col: body.get(src) for col, src in _INDEXED.items()}
        conn.execute(records.insert().values(seq=seq, body=text, prev_hash=prev, hash=h,
                                             feedback_key=feedback_key, seal=seal(self.seal_key, seq, h),
                                             **values))
        return h

    def _set_head(self, conn, seq: int, h: str) -> None:
        conn.execute(chain_head.update().where(chain_head.c.id == 1).values(seq=seq, hash=h))

    def record_evaluation(self, record: dict, *, _scrubbed: bool = False) -> int:
        """Append one decision record; returns its sequence number once committed.

        Everything but the chain itself (scrubbing, serialising, the card index rows) is done before the chain
        lock. Records that arrive while another thread of this process is committing are committed together, in
        the next transaction (group commit, `_GroupCommit`): one lock, one fsync for all of them."""
        if not isinstance(record, dict) or not record.get("hookInstance"):
            raise ValueError("an evaluation record needs a hookInstance")
        if record.get("format") != RECORD_FORMAT:
            record, _scrubbed = compact_record(record, scrubbed=True), True  # a caller's record of format 2 shape
        # decision_body scrubs as it builds; a record from anywhere else is scrubbed here
        body = dict(record) if _scrubbed else scrub(record)[0]
        body["type"] = "evaluation"
        body["format"] = RECORD_FORMAT
        body.pop("card", None)
        self.seal_key  # noqa: B018 - load (or create) the key before taking the chain lock
        return self._committer.submit(_Pending(body))

    def _commit_batch(self, batch: "list[_Pending]") -> None:
        """One transaction for a batch of evaluation records, in order: the chain lock is held from reading the
        head to the commit, and nothing else is done under it than numbering, timing, hashing and writing."""
        with self._write() as conn:
            seq, prev = self._lock_head(conn)
            last = ""
            if seq > 0:
                last = conn.execute(sa.select(records.c.recorded_at).where(records.c.seq == seq)).scalar() or ""
            rows, card_rows = [], []
            now = utc_now()  # taken under the chain lock, like the previous record's
            for p in batch:
                t = p.time or now
                t = t if t > last or not TIME_RE.match(last) else last  # times never go backwards
                last = t
                seq += 1
                text = p.text(t)
                h = chain_hash(prev, text)
                rows.append(dict(p.values, recorded_at=t, seq=seq, body=text, prev_hash=prev, hash=h,
                                 feedback_key=None, seal=seal(self.seal_key, seq, h)))
                card_rows += [dict(c, seq=seq) for c in p.cards]
                p.seq = seq
                prev = h
            conn.execute(records.insert(), rows)
            if card_rows:
                conn.execute(cards.insert(), card_rows)
            self._set_head(conn, seq, prev)

    @property
    def _committer(self) -> "_GroupCommit":
        c = self.__dict__.get("_group")
        if c is None or c.pid != os.getpid():  # a forked worker starts its own (threads do not survive fork)
            c = self.__dict__["_group"] = _GroupCommit(self._commit_batch)
        return c

    def record_result(self, result: Any, *, hook: str, hook_instance: str, service_id: str,
                      patient_id: str | None, latency_ms: float, ruleset: Any = None,
                      suppressed: list | None = None) -> int:
        """build_decision_record + record_evaluation with this store's key: the one call the
        service makes after evaluating and before it answers. `suppressed`: (card, reason) pairs decided
        but not shown (kept in the record)."""
        from .record import decision_body
        return self.record_evaluation(decision_body(
            result, hook=hook, hook_instance=hook_instance, service_id=service_id, patient_id=patient_id,
            latency_ms=latency_ms, key=self.key, ruleset=ruleset, suppressed=suppressed), _scrubbed=True)

    def overridden(self, patient_id: str, since: str) -> dict:
        """(rule id, data key) -> time of the feedback, for the cards of this patient that a clinician overrode
        since `since` (ISO time). The data key is the one recorded with the card (audit.record.card_data_key)."""
        from .record import patient_key
        pkey = patient_key(patient_id, self.key)
        out: dict = {}
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(records).where(records.c.kind == "feedback",
                                                             records.c.recorded_at >= since)):
                fb = json.loads(row.body)
                if fb.get("outcome") != "overridden" or not fb.get("evaluationSeq"):
                    continue
                ev = conn.execute(sa.select(records).where(records.c.seq == fb["evaluationSeq"],
                                                           records.c.patient_key == pkey)).first()
                if ev is None:
                    continue
                for card in json.loads(ev.body).get("cards") or []:
                    if card.get("uuid") == fb.get("card") and card.get("dataKey") and card.get("rule"):
                        out[(card["rule"].get("id"), card["dataKey"])] = fb.get("time")
        return out

    def record_feedback(self, service_id: str, feedback: dict) -> bool:
        """Store CDS Hooks feedback (one item, or a body with a `feedback` list).

        Idempotent: an item already stored for this service is not stored again.
        Returns True if anything new was stored. Each stored item is linked to the
        evaluation that returned its card (rule id and version, hookInstance)."""
        # a body holds items under "feedback"; an item (it names its card) may carry any extra member, that one too
        is_body = isinstance(feedback, dict) and "feedback" in feedback and "card" not in feedback
        items = feedback.get("feedback") if is_body else [feedback]
        if not isinstance(items, list) or not all(isinstance(i, dict) and i.get("card") for i in items):
            raise ValueError("feedback items need a card uuid")
        import hashlib

        stored = False
        self.seal_key  # noqa: B018 - load (or create) the key before taking the chain lock
        with self._write() as conn:
            seq, prev = self._lock_head(conn)
            now = self._log_time(conn, seq)
            for item in items:
                clean, _ = scrub(item)
                fkey = hashlib.sha256(canonical_json({"serviceId": service_id, "item": clean})
                                      .encode("utf-8")).hexdigest()
                exists = conn.execute(sa.select(records.c.seq).where(records.c.feedback_key == fkey)).first()
                if exists:
                    continue
                # the index only finds candidates: the link is taken from the chained record that returned the card
                link = self._card_decision(conn, str(clean["card"]))
                card = next(c for c in link["cards"] if c.get("uuid") == str(clean["card"])) if link else None
                rule = (card or {}).get("rule") or {}
                body = {
                    "type": "feedback", "format": RECORD_FORMAT, "time": now, "serviceId": service_id,
                    "card": str(clean["card"]), "outcome": clean.get("outcome"),
                    "outcomeTimestamp": clean.get("outcomeTimestamp"),
                    "acceptedSuggestions": clean.get("acceptedSuggestions") or [],
                    "overrideReason": clean.get("overrideReason"),
                    "evaluationSeq": link["seq"] if link else None,
                    "hookInstance": link.get("hookInstance") if link else None,
                    "rule": {"id": rule.get("id"), "version": rule.get("version")} if link else None,
                    "feedbackKey": fkey,
                }
                seq += 1
                prev = self._append(conn, seq, prev, body, feedback_key=fkey)
                stored = True
            if stored:
                self._set_head(conn, seq, prev)
        return stored

    # ---- reading ----------------------------------------------------------------
    def _rows(self, conn, *where, order="asc") -> Iterator[Any]:
        q = sa.select(records).where(*where)
        q = q.order_by(records.c.seq.asc() if order == "asc" else records.c.seq.desc())
        yield from conn.execution_options(yield_per=1000).execute(q)

    @staticmethod
    def _decode(row) -> dict:
        rec = expand_record(json.loads(row.body))
        rec["seq"] = row.seq
        rec["hash"] = row.hash
        rec["prevHash"] = row.prev_hash
        return rec

    def get(self, hook_instance: str) -> dict | None:
        """The latest evaluation record for a hookInstance, with the feedback on its cards."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(records).where(records.c.hook_instance == hook_instance,
                                                        records.c.kind == "evaluation")
                               .order_by(records.c.seq.desc()).limit(1)).first()
            return self._full(conn, row) if row is not None else None

    def get_by_card(self, card_uuid: str) -> dict | None:
        """The evaluation record that returned this card (the uuid an EHR logs or shows)."""
        with self.engine.connect() as conn:
            found = self._card_decision(conn, card_uuid)
            if found is None:
                return None
            row = conn.execute(sa.select(records).where(records.c.seq == found["seq"])).first()
            return self._full(conn, row) if row is not None else None

    @staticmethod
    def _card_decision(conn, card_uuid: str, before: int | None = None) -> dict | None:
        """The latest evaluation record that itself lists this card: the audit_card index names candidates,
        the chained record decides (an index row pointing elsewhere finds nothing rather than a wrong decision)."""
        q = sa.select(cards.c.seq).where(cards.c.card_uuid == card_uuid)
        if before is not None:
            q = q.where(cards.c.seq < before)
        seqs = conn.execute(q.order_by(cards.c.seq.desc())).scalars().all()
        for seq in seqs:
            row = conn.execute(sa.select(records.c.seq, records.c.body).where(
                records.c.seq == seq, records.c.kind == "evaluation")).first()
            if row is None:
                continue
            try:
                body = json.loads(row.body)
            except ValueError:
                continue
            if any(isinstance(c, dict) and c.get("uuid") == card_uuid for c in body.get("cards") or []):
                body["seq"] = row.seq
                return body
        return None

    def _full(self, conn, row) -> dict:
        rec = self._decode(row)
        # An EHR may retry a hookInstance: say how many other decisions carry it.
        rec["sameHookInstance"] = conn.execute(
            sa.select(sa.func.count()).select_from(records).where(
                records.c.hook_instance == row.hook_instance, records.c.kind == "evaluation",
                records.c.seq != row.seq)).scalar_one()
        uuids = [c.get("uuid") for c in rec.get("cards") or [] if c.get("uuid")]
        rec["feedback"] = []
        if uuids:
            fb = conn.execute(sa.select(records).where(records.c.kind == "feedback",
                                                       records.c.card_uuid.in_(uuids))
                              .order_by(records.c.seq)).all()
            rec["feedback"] = [self._decode(r) for r in fb]
        return rec

    def find(self, *, patient_id: str | None = None, rule_id: str | None = None, since: str | None = None,
             limit: int = 100) -> list[dict]:
        """Decisions, newest first, for one patient (by their pseudonymous key) and/or one rule
        (fired, shadow-fired or carded); a summary line each."""
        from .record import patient_key
        where = [records.c.kind == "evaluation"]
        if patient_id is not None:
            where.append(records.c.patient_key == patient_key(patient_id, self.key))
        if since:
            where.append(records.c.recorded_at >= since)
        out = []
        with self.engine.connect() as conn:
            for row in self._rows(conn, *where, order="desc"):
                rec = expand_record(json.loads(row.body))
                fired = [f"{f.get('id')} {f.get('version')}" for f in rec.get("rulesFired") or []]
                shadow = [f"{f.get('id')} {f.get('version')}" for f in rec.get("shadow") or []]
                if rule_id and not any(x.split(" ")[0] == rule_id for x in fired + shadow):
                    continue
                out.append({"seq": row.seq, "time": rec.get("time"), "hook": rec.get("hook"),
                            "hookInstance": rec.get("hookInstance"), "serviceId": rec.get("serviceId"),
                            "patientKey": rec.get("patientKey"), "fired": fired, "shadow": shadow,
                            "cards": [c.get("uuid") for c in rec.get("cards") or []]})
                if len(out) >= limit:
                    break
        return out

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)).one()
            return int(row.seq), row.hash

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(records)).scalar_one()

    def verify(self, *, max_problems: int = 100, seals: bool = True) -> VerifyReport:
        """Walk the chain from the first record; report every break, first one first.

        Besides the hash chain: every record's seal (with the audit key, which is not in the database; skipped
        when `seals` is false or no key is available, and then `seals_checked` is false), record times never
        going backwards and formats never going back, the card index (audit_card) against the cards inside the
        chained records, and each feedback record's link to the decision that returned its card."""
        problems: list[Problem] = []
        seen = _RecentHashes()   # hash -> seq, to tell insertions from deletions
        n = 0
        last_seq, last_hash = 0, GENESIS_HASH
        last_time: Any = None
        last_format = 1
        seals_checked = seals
        skey: bytes | None = None
        gone: list[tuple[int, int]] = []   # ranges of records reported deleted
        dangling: list[Any] = []           # card index rows naming no record
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():  # one snapshot: head and records agree
                heads = conn.execute(sa.select(chain_head.c.seq, chain_head.c.hash)).all()
                head_seq: int | None = None
                head_hash = GENESIS_HASH
                if len(heads) == 1:
                    head_seq, head_hash = int(heads[0].seq), heads[0].hash
                else:
                    problems.append(Problem(None, "deleted" if not heads else "changed",
                                            "the chain head row (audit_chain_head) is missing: where the log ends "
                                            "cannot be checked" if not heads else
                                            f"the chain head table holds {len(heads)} rows instead of one"))
                walk_head = head_seq if head_seq is not None else 2 ** 62
                card_rows = _Peek(conn.execution_options(yield_per=1000).execute(
                    sa.select(cards).order_by(cards.c.seq, cards.c.card_uuid)))
                for row in self._rows(conn):
                    n += 1
                    seen.conn = conn
                    body = _json_object(row.body)
                    p = self._check_row(row, body, last_seq, last_hash, seen, walk_head)
                    outside = p is not None and p.kind == "inserted" and (row.seq > walk_head or row.seq <= 0)
                    if p is None and seals_checked:
                        if skey is None:
                            try:  # verify never creates a key: a new one could only call every record forged
                                skey = self._seal_key or seal_key(self._key or config.load_audit_key(create=False))
                            except config.MissingAuditKey:
                                seals_checked = False
                        if skey is not None and row.seal is None:
                            p = Problem(row.seq, "inserted", "it has no seal: added by someone without the audit "
                                                             "key (forged)")
                        elif skey is not None and row.seal != seal(skey, row.seq, row.hash):
                            p = Problem(row.seq, "changed", "its seal does not match: rewritten or renumbered by "
                                                            "someone without the audit key (forged), or this is "
                                                            "not the key the service uses")
                    if p is None and body is not None:
                        p = self._check_order(row, body, last_time, last_format)
                    if p is None and body is not None and body.get("type") == "feedback":
                        p = self._check_feedback(conn, row, body)
                    if p:
                        problems.append(p)
                        if p.kind == "deleted" and p.seq is not None:
                            gone.append((p.seq, row.seq - 1))
                    problems.extend(self._check_cards(row, body, card_rows, dangling))
                    if outside:
                        continue  # not part of the chain: judge the next record against the last good one
                    seen[row.hash] = row.seq
                    last_seq, last_hash = row.seq, row.hash
                    if body is not None:
                        last_time = body.get("time")
                        fmt = body.get("format", 1)
                        last_format = fmt if isinstance(fmt, int) else last_format
                    if len(problems) >= max_problems:
                        break
                else:
                    dangling.extend(card_rows.rest())
                    if head_seq is None:
                        pass
                    elif last_seq < head_seq:
                        gone.append((last_seq + 1, head_seq))
                        problems.append(Problem(last_seq + 1, "deleted",
                                                f"records {last_seq + 1}..{head_seq} are missing from the end "
                                                f"(chain head is record {head_seq})"))
                    elif last_hash != head_hash:
                        problems.append(Problem(last_seq, "changed",
                                                "last record's hash differs from the chain head"))
        # index rows of records reported deleted are a consequence, not news; any other is a problem of its own
        for r in dangling:
            if not any(a <= r.seq <= b for a, b in gone):
                problems.append(Problem(r.seq, "changed", f"the card index (audit_card) names card {r.card_uuid} "
                                                          f"for record {r.seq}, which does not exist"))
        if head_seq is None:
            head_seq, head_hash = last_seq, last_hash
        return VerifyReport(ok=not problems, records=n, head_seq=head_seq, head_hash=head_hash,
                            problems=problems, seals_checked=seals_checked or n == 0)

    @staticmethod
    def _check_order(row, body: dict, last_time: Any, last_format: int) -> Problem | None:
        """Format 2 on: times never go backwards, formats never go back, feedback_key is the hashed one."""
        seq = row.seq
        fmt = body.get("format", 1)
        if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= RECORD_FORMAT:
            return Problem(seq, "changed", f"unknown record format {fmt!r}")
        if fmt < last_format:
            return Problem(seq, "changed", f"record format {fmt} after format {last_format}: written by an older "
                                           "pacecds than the records before it")
        if fmt < 2:
            return None  # format 1: times were taken before the chain lock, so concurrent writers could swap them
        t = body.get("time")
        if not isinstance(t, str) or not TIME_RE.match(t):
            return Problem(seq, "changed", f"time {t!r} is not a UTC time of the form 2026-12-02T13:07:15.000000Z")
        if isinstance(last_time, str) and TIME_RE.match(last_time) and t < last_time:
            return Problem(seq, "changed", f"time {t} is before the previous record's ({last_time}): times went "
                                           "backwards")
        if body.get("type") == "feedback" and row.feedback_key != body.get("feedbackKey"):
            return Problem(seq, "changed", "column feedback_key differs from the hashed content")
        return None

    def _check_feedback(self, conn, row, body: dict) -> Problem | None:
        """A feedback record is linked to the decision that returned its card, with that card's rule."""
        card, ev = body.get("card"), body.get("evaluationSeq")
        if ev is None:
            earlier = self._card_decision(conn, str(card), before=row.seq)
            if earlier is not None:
                return Problem(row.seq, "changed", f"feedback on card {card} is not linked to record "
                                                   f"{earlier['seq']}, which returned that card")
            return None
        target = None
        if isinstance(ev, int) and 0 < ev < row.seq:
            target = conn.execute(sa.select(records.c.body).where(records.c.seq == ev,
                                                                  records.c.kind == "evaluation")).first()
        tbody = _json_object(target.body) if target is not None else None
        found = [c for c in (tbody or {}).get("cards") or [] if isinstance(c, dict) and c.get("uuid") == card]
        if not found:
            return Problem(row.seq, "changed", f"feedback on card {card} refers to record {ev}, which did not "
                                               "return that card")
        rule = found[0].get("rule") or {}
        if (body.get("rule") != {"id": rule.get("id"), "version": rule.get("version")}
                or body.get("hookInstance") != (tbody or {}).get("hookInstance")):
            return Problem(row.seq, "changed", f"feedback on card {card} names another rule or hookInstance than "
                                               f"record {ev}, which returned the card")
        return None

    @staticmethod
    def _check_cards(row, body: dict | None, card_rows: "_Peek", dangling: list) -> list[Problem]:
        """The card index rows of this record are exactly the cards inside it (uuid, rule id and version)."""
        expected: dict[str, tuple] = {}
        if body is not None and body.get("type") == "evaluation":
            for c in body.get("cards") or []:
                if isinstance(c, dict) and c.get("uuid"):
                    r = c.get("rule")
                    rule: dict = r if isinstance(r, dict) else {}
                    expected.setdefault(str(c["uuid"]), (rule.get("id"), rule.get("version")))
        out: list[Problem] = []
        while card_rows.peek is not None and card_rows.peek.seq < row.seq:
            dangling.append(card_rows.pop())
        actual: dict[str, tuple] = {}
        while card_rows.peek is not None and card_rows.peek.seq == row.seq:
            r = card_rows.pop()
            actual[r.card_uuid] = (r.rule_id, r.rule_version)
        for u in sorted(set(expected) | set(actual)):
            if u not in actual:
                out.append(Problem(row.seq, "changed", f"the card index (audit_card) lacks card {u}, which this "
                                                       "record returned"))
            elif u not in expected:
                out.append(Problem(row.seq, "changed", f"the card index (audit_card) names card {u}, which this "
                                                       "record did not return"))
            elif actual[u] != expected[u]:
                out.append(Problem(row.seq, "changed", f"the card index (audit_card) gives card {u} rule "
                                                       f"{actual[u][0]} {actual[u][1]}, the record "
                                                       f"{expected[u][0]} {expected[u][1]}"))
        return out

    @staticmethod
    def _check_row(row, body: dict | None, last_seq: int, last_hash: str, seen: "_RecentHashes",
                   head_seq: int) -> Problem | None:
        seq = row.seq
        if seq > head_seq or seq <= 0:
            return Problem(seq, "inserted", f"lies outside the chain (the chain head is record {head_seq})")
        if chain_hash(row.prev_hash, row.body) != row.hash:
            return Problem(seq, "changed", "content does not match its hash")
        if body is None:
            return Problem(seq, "changed", "content is not a JSON object")
        for col, src in _INDEXED.items():
            if getattr(row, col) != body.get(src):
                return Problem(seq, "changed", f"column {col} ({getattr(row, col)!r}) differs from the "
                                               f"hashed content ({body.get(src)!r})")
        if row.prev_hash == last_hash:
            if seq != last_seq + 1:
                return Problem(seq, "changed", f"sequence number jumps from {last_seq} to {seq} "
                                               "although the hash chain is unbroken")
            return None
        follows = seen.get(row.prev_hash, before=seq)
        if follows is not None and follows < last_seq:
            first = follows + 1
            return Problem(first, "inserted", f"records {first}..{last_seq} are not in the chain: record "
                                              f"{seq} follows record {follows}")
        if seq > last_seq + 1:
            return Problem(last_seq + 1, "deleted", f"records {last_seq + 1}..{seq - 1} are missing "
                                                    f"(record {seq} does not follow record {last_seq})")
        if last_seq == 0:
            return Problem(seq, "changed", "the first record does not start the chain")
        return Problem(last_seq, "changed", f"record {seq} does not follow it: its content and hash "
                                            "were rewritten, or it was replaced")

    def export(self, since: str | None = None) -> Iterator[dict]:
        """Records in chain order as {"seq", "prevHash", "hash", "record"}: enough to re-check every
        hash without the database (`verify_export`). `since` starts at the first record at or after
        that time; the chain is continuous from there."""
        with self.engine.connect() as conn:
            start = 1
            if since:
                first = conn.execute(sa.select(sa.func.min(records.c.seq))
                                     .where(records.c.recorded_at >= since)).scalar()
                if first is None:
                    return
                start = first
            for row in self._rows(conn, records.c.seq >= start):
                yield {"seq": row.seq, "prevHash": row.prev_hash, "hash": row.hash, "seal": row.seal,
                       "record": json.loads(row.body)}

    def stats(self, since: str | None = None, release: str | None = None) -> dict:
        """Per rule: evaluated, fired, shadow-fired, cards, accepted, overridden, override reasons, patients
        with a card; and cards per patient. `release`: only decisions made by that ruleset (a key from
        `releases`, the ruleset's sha256, else "name version"), and the feedback on their cards. `releases`
        lists every ruleset seen since `since`, whatever `release` says (for choosing one)."""
        rules: dict[str, dict] = {}

        def entry(rid: str | None) -> dict:
            rid = rid or "(unknown)"
            return rules.setdefault(rid, {"evaluated": 0, "fired": 0, "shadow_fired": 0, "cards": 0,
                                          "accepted": 0, "overridden": 0, "override_reasons": {},
                                          "versions": set(), "patients": set()})

        evaluations = feedback = 0
        releases: dict[str, dict] = {}
        chosen: set[int] = set()  # seqs of the decisions counted (feedback follows its decision)
        per_patient: dict[str, int] = {}
        where = [records.c.recorded_at >= since] if since else []
        with self.engine.connect() as conn:
            for row in self._rows(conn, *where):
                rec = expand_record(json.loads(row.body))
                if rec.get("type") == "evaluation":
                    key, info = release_of(rec)
                    seen = releases.setdefault(key, {**info, "key": key, "evaluations": 0})
                    seen["evaluations"] += 1
                    if release is not None and key != release:
                        continue
                    chosen.add(row.seq)
                    evaluations += 1
                    patient = rec.get("patientKey") or "(no patient)"
                    per_patient[patient] = per_patient.get(patient, 0) + len(rec.get("cards") or [])
                    for r in rec.get("rulesEvaluated") or []:
                        e = entry(r.get("id"))
                        e["evaluated"] += 1
                        e["versions"].add(r.get("version"))
                    for r in rec.get("rulesFired") or []:
                        entry(r.get("id"))["fired"] += 1
                    for r in rec.get("shadow") or []:
                        entry(r.get("id"))["shadow_fired"] += 1
                    for c in rec.get("cards") or []:
                        e = entry((c.get("rule") or {}).get("id"))
                        e["cards"] += 1
                        e["patients"].add(patient)
                elif rec.get("type") == "feedback":
                    if release is not None and rec.get("evaluationSeq") not in chosen:
                        continue
                    feedback += 1
                    e = entry((rec.get("rule") or {}).get("id"))
                    if rec.get("outcome") == "accepted":
                        e["accepted"] += 1
                    elif rec.get("outcome") == "overridden":
                        e["overridden"] += 1
                        reason = _reason_label(rec.get("overrideReason"))
                        e["override_reasons"][reason] = e["override_reasons"].get(reason, 0) + 1
        for e in rules.values():
            e["versions"] = sorted(v for v in e["versions"] if v)
            e["patients"] = len(e["patients"])
        counts = list(per_patient.values())
        histogram = {label: 0 for label in ("0", "1", "2", "3", "4", "5+")}
        for n in counts:
            histogram[str(n) if n < 5 else "5+"] += 1
        return {"since": since, "release": release, "evaluations": evaluations, "feedback": feedback,
                "rules": dict(sorted(rules.items())), "releases": list(releases.values()),
                "cards_per_patient": {"patients": len(counts), "cards": sum(counts),
                                      "mean": round(sum(counts) / len(counts), 2) if counts else None,
                                      "max": max(counts) if counts else None, "histogram": histogram}}


def release_of(rec: dict) -> tuple[str, dict]:
    """The ruleset that made a decision: (key, {name, version, sha256}); the key is the sha256 when recorded."""
    rs = rec.get("ruleset")
    rs = rs if isinstance(rs, dict) else {}
    info = {k: rs.get(k) for k in ("name", "version", "sha256")}
    key = info["sha256"] or " ".join(str(info[k]) for k in ("name", "version") if info[k]) or "(unknown)"
    return str(key), info


def _reason_label(reason: Any) -> str:
    if not reason:
        return "(no reason given)"
    coding = reason.get("reason") or {}
    label = coding.get("display") or coding.get("code")
    if not label:
        return "(no reason given)"
    return label


def _json_object(text: str) -> dict | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class _Peek:
    """An iterator over rows with one row of look-ahead."""

    def __init__(self, rows: Iterable[Any]):
        self._it = iter(rows)
        self.peek = next(self._it, None)

    def pop(self) -> Any:
        r, self.peek = self.peek, next(self._it, None)
        return r

    def rest(self) -> Iterator[Any]:
        while self.peek is not None:
            yield self.pop()


class _WriteTxn:
    """`with store._write() as conn:` — a write transaction that commits or rolls back, then closes (and
    releases the writers' file lock, if any)."""

    def __init__(self, conn, lock: "_FileLock | None" = None):
        self.conn = conn
        self.lock = lock

    def __enter__(self):
        if self.lock is not None:
            self.lock.acquire()
        try:
            self.txn = self.conn.begin()
        except BaseException:
            self._release()
            raise
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.txn.commit()
            else:
                self.txn.rollback()
        finally:
            self.conn.close()
            self._release()
        return False

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()


class _FileLock:
    """An exclusive lock shared by the threads of one process (threading.Lock) and the processes on one host
    (fcntl.flock on a file next to the database). Opened per process: a descriptor inherited through fork
    would share its lock with the parent."""

    def __init__(self, path: str):
        self.pid = os.getpid()
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def acquire(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


_PLACEHOLDER_TIME = "0000-00-00T00:00:00.000000Z"  # as wide as a real time; replaced under the chain lock


class _Pending:
    """An evaluation record waiting for its transaction: serialised before the chain lock, with a placeholder
    for the log time that only the committer knows."""

    def __init__(self, body: dict):
        wanted = body.get("time")
        self.time: str | None = wanted if isinstance(wanted, str) and TIME_RE.match(wanted) else None
        body["time"] = _PLACEHOLDER_TIME
        self._text = canonical_json(body)
        self._body = body if self._text.count(_PLACEHOLDER_TIME) != 1 else None  # else serialise under the lock
        self.values = {col: body.get(src) for col, src in _INDEXED.items() if col != "recorded_at"}
        rows, seen = [], set()
        for c in body.get("cards") or []:
            # A response never repeats a uuid, but a duplicate must not lose the record.
            if isinstance(c, dict) and c.get("uuid") and c["uuid"] not in seen:
                seen.add(c["uuid"])
                rule = c.get("rule") or {}
                rows.append({"card_uuid": c["uuid"], "rule_id": rule.get("id"), "rule_version": rule.get("version")})
        self.cards = rows
        self.seq: int | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lead = False

    def text(self, t: str) -> str:
        if self._body is not None:
            self._body["time"] = t
            return canonical_json(self._body)
        return self._text.replace(_PLACEHOLDER_TIME, t, 1)


class _GroupCommit:
    """Leader and followers: the first thread to append commits; threads that append while it does wait, and
    the first of them then commits all of their records in one transaction. A thread returns only once its own
    record is committed (no card leaves before its record). If a batch fails, its records are retried one by
    one, so only a record that fails on its own fails its request."""

    def __init__(self, commit):
        self.pid = os.getpid()
        self._commit = commit
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False

    def submit(self, p: _Pending) -> int:
        with self._lock:
            self._queue.append(p)
            lead = not self._busy
            self._busy = True
        if not lead:
            p.done.wait()
            if not p.lead:
                return self._result(p)
        # the leader: commit what is queued (own record included), then hand over to the next waiting thread
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.done.set()
                else:
                    self._busy = False
        return self._result(p)

    def _run(self, batch: list[_Pending]) -> None:
        try:
            self._commit(batch)
        except BaseException as e:  # noqa: BLE001 - reported to each waiting thread
            if len(batch) == 1:
                batch[0].error = e
            else:
                for p in batch:
                    self._run([p])
                return
        for p in batch:
            if p.error is None or len(batch) == 1:
                p.lead = False
                p.done.set()

    @staticmethod
    def _result(p: _Pending) -> int:
        if p.error is not None:
            raise p.error
        assert p.seq is not None
        return p.seq


class _RecentHashes:
    """hash -> seq for the records verify has passed, bounded in memory: the most recent ones are
    kept, older ones are looked up in the database (only needed where the chain is broken)."""

    LIMIT = 100_000

    def __init__(self):
        self._d: dict[str, int] = {GENESIS_HASH: 0}
        self.conn = None

    def __setitem__(self, h: str, seq: int) -> None:
        self._d[h] = seq
        if len(self._d) > self.LIMIT:
            self._d.pop(next(iter(self._d)))  # dicts keep insertion order: drop the oldest

    def get(self, h: str, before: int) -> int | None:
        if h in self._d:
            return self._d[h]
        if h == GENESIS_HASH:
            return 0
        if self.conn is None:
            return None
        return self.conn.execute(sa.select(sa.func.max(records.c.seq))
                                 .where(records.c.hash == h, records.c.seq < before)).scalar()


def verify_export(lines: Iterable[str | dict], key: bytes | None = None) -> VerifyReport:
    """Check an export offline: each line's hash over its record, and each line chained to the
    one before. The first line's prevHash is taken as given (compare it with a head hash you kept).
    With the audit `key`, each line's seal too (else `seals_checked` is false)."""
    skey = seal_key(key) if key is not None else None
    problems: list[Problem] = []
    last_seq: int | None = None
    last_hash: str | None = None
    n = 0
    first_prev = GENESIS_HASH
    for i, line in enumerate(lines):
        if isinstance(line, str):
            if not line.strip():
                continue
            try:
                line = json.loads(line)
            except ValueError:
                problems.append(Problem(None, "changed", f"line {i + 1} is not JSON"))
                continue
        n += 1
        seq, prev, h = line.get("seq"), line.get("prevHash"), line.get("hash")
        if n == 1:
            first_prev = prev
        if chain_hash(str(prev), canonical_json(line.get("record"))) != h:
            problems.append(Problem(seq, "changed", "content does not match its hash"))
        elif last_hash is not None and prev != last_hash:
            kind = "deleted" if isinstance(seq, int) and isinstance(last_seq, int) and seq > last_seq + 1 else "changed"
            problems.append(Problem(seq, kind, f"does not follow record {last_seq}"))
        elif skey is not None and not line.get("seal"):
            problems.append(Problem(seq, "inserted", "it has no seal: added by someone without the audit key"))
        elif skey is not None and (not isinstance(seq, int) or line.get("seal") != seal(skey, seq, str(h))):
            problems.append(Problem(seq, "changed", "its seal does not match: rewritten or renumbered without the "
                                                    "audit key, or this is not the key the service uses"))
        last_seq, last_hash = seq, h
    return VerifyReport(ok=not problems, records=n, head_seq=last_seq or 0, head_hash=last_hash or first_prev,
                        problems=problems, seals_checked=skey is not None or n == 0)

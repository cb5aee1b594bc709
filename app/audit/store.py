"""The audit store: AuditEvents committed before the response leaves, so an acknowledged request is never
missing from the log after a crash; searched by patient, date, client.

SQLite (WAL, synchronous=FULL) is the embedded default (`audit.path`); PostgreSQL (`audit.url:
postgresql://...`, app/audit/pg_store.py) lets several facade instances keep one trail, each finding the
others' events. Both answer every search alike (the same columns, byte order of text, page order).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from app.audit.postgres import StoreUnavailable, is_postgres

AuditRow = tuple[str, str, str | None, str | None, str, bytes]


class AuditStore(Protocol):
    """Durable, append-only storage of AuditEvents, searchable by patient, date and client."""

    def write(self, events: list[dict[str, Any]], client_id: str | None) -> None: ...
    def search(
        self,
        patient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        client_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]: ...
    def count(
        self,
        patient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        client_id: str | None = None,
    ) -> int: ...
    def writable(self) -> bool: ...
    def close(self) -> None: ...


class GroupCommit:
    """Rows of concurrent requests committed together, each request still waiting for its own rows' commit.

    A request adds its rows to the open batch and then takes the writer's turn; whoever holds the turn
    commits everything pending in one transaction (one fsync for SQLite, one round trip and WAL flush for
    PostgreSQL) and marks the batch done. A request whose batch an earlier turn committed returns without
    writing; one whose batch failed raises, as every other request of that batch does: an acknowledged
    request is never missing from the trail, and nobody is acknowledged on a commit that failed."""

    def __init__(self, commit: Callable[[list[AuditRow]], None]) -> None:
        self._commit = commit
        self._pending_lock = threading.Lock()
        self._turn = threading.Lock()
        self._pending = _Batch()
        self.commits = 0  # transactions made: fewer than writes when requests overlap

    def write(self, rows: list[AuditRow]) -> None:
        if not rows:
            return
        with self._pending_lock:
            batch = self._pending
            batch.rows.extend(rows)
        with self._turn:
            if not batch.done:
                with self._pending_lock:
                    taken, self._pending = self._pending, _Batch()
                try:
                    self._commit(taken.rows)
                except BaseException as exc:
                    taken.error = exc
                    raise
                finally:
                    taken.done = True
                    self.commits += 1
                return
        if batch.error is not None:  # the request that held the turn raised the cause itself
            raise StoreUnavailable("the audit trail") from batch.error


@dataclass
class _Batch:
    rows: list[AuditRow] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None


def audit_rows(events: list[dict[str, Any]], client_id: str | None) -> list[AuditRow]:
    """(id, recorded, patient, client_id, outcome, body) of each event: the columns searched, and the event."""
    rows = []
    for event in events:
        patient = next(
            (
                e["what"]["reference"].split("/", 1)[1]
                for e in event.get("entity", ())
                if e.get("role", {}).get("code") == "1"
            ),
            None,
        )
        rows.append((event["id"], event["recorded"], patient, client_id, event["outcome"], orjson.dumps(event)))
    return rows


def where_clause(
    patient: str | None, since: str | None, until: str | None, client_id: str | None, mark: str = "?"
) -> tuple[str, list[str]]:
    """The WHERE clause of a search (`mark`: the driver's parameter marker) and its arguments."""
    clauses, args = [], []
    for clause, value in (
        ("patient = ?", patient),
        ("recorded >= ?", since),
        ("recorded < ?", until),
        ("client_id = ?", client_id),
    ):
        if value is not None:
            clauses.append(clause.replace("?", mark))
            args.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


def open_audit_store(spec: str) -> AuditStore:
    """`postgresql://...` (audit.url) or `sqlite:<absolute path>` (audit.path)."""
    if is_postgres(spec):
        from app.audit.pg_store import PostgresAuditStore

        return PostgresAuditStore(spec)
    return SqliteAuditStore(Path(spec.removeprefix("sqlite:")))


def private_file(path: Path) -> None:
    """An SQLite database file (and its -wal and -shm files) readable and writable by its owner only (0600),
    created so before SQLite opens it (SQLite gives its -wal and -shm files the database file's mode).

    An existing file is never opened here: closing any descriptor of a file drops every POSIX lock the
    process holds on it, SQLite's included, and another connection of this process would then write
    unguarded (a corrupted database). Its mode is changed by path instead.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # a new, empty file: nobody holds it open yet
    for found in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if found.exists() and found.stat().st_mode & 0o077:  # an older, wider file: narrowed to its owner
            found.chmod(0o600)


class SqliteAuditStore:
    """The audit trail in one SQLite file (the embedded default)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS audit_event (
            id TEXT PRIMARY KEY, recorded TEXT NOT NULL, patient TEXT, client_id TEXT,
            outcome TEXT NOT NULL, body BLOB NOT NULL)""")
        self._db.execute("CREATE INDEX IF NOT EXISTS audit_patient ON audit_event (patient, recorded)")
        self._db.execute("CREATE INDEX IF NOT EXISTS audit_recorded ON audit_event (recorded)")
        self.group = GroupCommit(self._commit)

    def write(self, events: list[dict[str, Any]], client_id: str | None) -> None:
        """Commit the events before returning (with those of concurrent requests: GroupCommit); the caller
        then answers."""
        self.group.write(audit_rows(events, client_id))

    def _commit(self, rows: list[AuditRow]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO audit_event VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    def search(
        self,
        patient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        client_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """One page of events, newest first (a stable order: recorded time, then id)."""
        where, args = where_clause(patient, since, until, client_id)
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM audit_event {where} ORDER BY recorded DESC, id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def count(
        self,
        patient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        client_id: str | None = None,
    ) -> int:
        where, args = where_clause(patient, since, until, client_id)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM audit_event {where}", args).fetchone()[0])

    def writable(self) -> bool:
        """True when an event could be committed now: the write lock is taken, then let go unused."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False

    def close(self) -> None:
        with self._lock:
            self._db.close()

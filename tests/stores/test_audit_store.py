"""The audit trail's stores: SQLite (the embedded default) and a real PostgreSQL answer every search alike
(same events, same pages, same order), commit before `write` returns, and PostgreSQL refuses with a 503
(never a 500, never a lost event reported as written) when its server is gone."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.audit.events import AuditRecord, build_events
from app.audit.pg_store import PostgresAuditStore
from app.audit.postgres import StoreUnavailable
from app.audit.store import AuditStore, SqliteAuditStore, open_audit_store
from tests.infra.postgres import PostgresServer

BASE = "http://facade.example/fhir"
PATIENTS = ("9992975962", "9990548609", "9993213240")
CLIENTS = ("portal", "imaging-timeline", None)


def _events(i: int) -> tuple[list[dict[str, Any]], str | None]:
    patients = (PATIENTS[i % 3],) if i % 4 else PATIENTS[: 1 + i % 3]
    client = CLIENTS[i % 3]
    record = AuditRecord("read", "ImagingStudy", 200 if i % 5 else 403, client, None, "192.0.2.7", None, None, patients)
    events = build_events(record, BASE)
    for n, event in enumerate(events):  # times spread over three days, some equal (the id then orders)
        event["recorded"] = f"2026-11-{10 + i % 3:02d}T{i % 24:02d}:{(i * 7) % 60:02d}:00.{n:03d}Z"
    return events, client


@pytest.fixture
def both(tmp_path: Path, postgres_url: str) -> Iterator[tuple[AuditStore, AuditStore]]:
    sqlite, postgres = open_audit_store(f"sqlite:{tmp_path / 'audit.sqlite'}"), open_audit_store(postgres_url)
    assert isinstance(sqlite, SqliteAuditStore) and isinstance(postgres, PostgresAuditStore)
    for i in range(60):
        events, client = _events(i)
        sqlite.write(events, client)
        postgres.write(events, client)
    yield sqlite, postgres
    sqlite.close()
    postgres.close()


CRITERIA: list[dict[str, Any]] = [
    {},
    {"patient": PATIENTS[0]},
    {"patient": PATIENTS[1], "since": "2026-11-11T00:00:00.000Z"},
    {"since": "2026-11-11T00:00:00.000Z", "until": "2026-11-12T00:00:00.000Z"},
    {"until": "2026-11-11T05:00:00.000Z"},
    {"client_id": "portal"},
    {"client_id": "imaging-timeline", "patient": PATIENTS[2]},
    {"patient": "0000000000"},
]


@pytest.mark.parametrize("criteria", CRITERIA, ids=lambda c: ",".join(c) or "all")
def test_both_stores_answer_alike(both: tuple[AuditStore, AuditStore], criteria: dict[str, Any]) -> None:
    sqlite, postgres = both
    total = sqlite.count(**criteria)
    assert postgres.count(**criteria) == total
    pages = []
    for store in (sqlite, postgres):
        found = []
        for offset in range(0, total + 7, 7):  # pages of 7 in the stores' order
            found += [e["id"] for e in store.search(**criteria, limit=7, offset=offset)]
        pages.append(found)
    assert pages[0] == pages[1]
    assert len(pages[0]) == total == len(set(pages[0]))
    full = postgres.search(**criteria, limit=1000)
    keys = [(e["recorded"], e["id"]) for e in full]
    assert keys == sorted(sorted(keys, key=lambda k: k[1]), key=lambda k: k[0], reverse=True)  # newest, then id


def test_counts_are_those_of_the_events_written(both: tuple[AuditStore, AuditStore]) -> None:
    _, postgres = both
    expected = sum(len(_events(i)[0]) for i in range(60))
    assert postgres.count() == expected
    by_portal = sum(len(_events(i)[0]) for i in range(60) if _events(i)[1] == "portal")
    assert postgres.count(client_id="portal") == by_portal


def test_a_written_event_is_committed_before_write_returns(postgres_url: str) -> None:
    store = open_audit_store(postgres_url)
    reader = psycopg.connect(postgres_url, autocommit=True)  # opened before the write
    try:
        events, client = _events(1)
        store.write(events, client)
        rows = reader.execute("SELECT id, patient, client_id FROM audit_event").fetchall()
        assert sorted(rows) == sorted((e["id"], PATIENTS[1], client) for e in events)
    finally:
        reader.close()
        store.close()


def test_writable(postgres_url: str) -> None:
    store = open_audit_store(postgres_url)
    try:
        assert store.writable() is True
        with psycopg.connect(postgres_url) as conn:  # a session holding a lock that INSERT would wait for
            conn.execute("LOCK TABLE audit_event IN SHARE MODE")
            assert store.writable() is False
        assert store.writable() is True
    finally:
        store.close()


def test_a_server_gone_is_a_503_not_an_error_of_ours() -> None:
    with PostgresServer() as server:
        store = open_audit_store(server.url)
        events, client = _events(2)
        store.write(events, client)
        server.stop()
        with pytest.raises(StoreUnavailable) as found:
            store.write(*_events(3))
        assert found.value.status_code == 503
        assert store.writable() is False
        store.close()


def _pile_up(store: AuditStore, hold: Any, release: Any, writers: int = 12) -> list[BaseException | None]:
    """`writers` requests write at once while `hold` keeps the trail's write lock; `release` lets it go.
    What each writer's write raised (None: it returned)."""
    outcomes: list[BaseException | None] = [None] * writers
    hold()
    started = threading.Barrier(writers + 1)

    def write(i: int) -> None:
        events, client = _events(100 + i)
        started.wait()
        try:
            store.write(events, client)
        except BaseException as exc:  # the test reports what each writer saw
            outcomes[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.5)  # every writer has queued behind the held lock
    release()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_concurrent_writes_share_commits_and_each_returns_committed(tmp_path: Path, postgres_url: str) -> None:
    sqlite_path = tmp_path / "audit.sqlite"
    sqlite = SqliteAuditStore(sqlite_path)
    blocker = sqlite3.connect(str(sqlite_path), isolation_level=None)
    outcomes = _pile_up(sqlite, lambda: blocker.execute("BEGIN IMMEDIATE"), lambda: blocker.execute("ROLLBACK"))
    assert outcomes == [None] * 12
    assert sqlite.count() == sum(len(_events(100 + i)[0]) for i in range(12))
    assert sqlite.group.commits < 12  # at least the writers queued behind the lock shared one transaction
    sqlite.close()
    postgres = open_audit_store(postgres_url)
    assert isinstance(postgres, PostgresAuditStore)
    locker = psycopg.connect(postgres_url)
    before = postgres.count()
    outcomes = _pile_up(
        postgres, lambda: locker.execute("LOCK TABLE audit_event IN SHARE MODE"), lambda: locker.rollback()
    )
    assert outcomes == [None] * 12
    assert postgres.count() - before == sum(len(_events(100 + i)[0]) for i in range(12))
    assert postgres.group.commits < 12
    locker.close()
    postgres.close()


def test_every_request_of_a_failed_batch_fails(tmp_path: Path) -> None:
    """No request is acknowledged on a commit that failed: the one that committed raises the cause, the others
    of its batch a 503."""
    path = tmp_path / "audit.sqlite"
    store = SqliteAuditStore(path)
    store._db.execute("PRAGMA busy_timeout=300")  # the held lock outlasts it: the batch's commit fails
    blocker = sqlite3.connect(str(path), isolation_level=None)
    outcomes = _pile_up(store, lambda: blocker.execute("BEGIN IMMEDIATE"), lambda: None, writers=6)
    blocker.execute("ROLLBACK")
    assert all(o is not None for o in outcomes), outcomes
    assert any(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    assert all(isinstance(o, (sqlite3.OperationalError, StoreUnavailable)) for o in outcomes)
    assert store.count() == 0
    store.close()

"""Schema migrations of the PostgreSQL stores: applied at start, once, under an advisory lock, so instances
starting together against one new database all start; a newer schema than the code knows is refused."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import psycopg
import pytest

from app.audit.pg_store import PostgresAuditStore
from app.audit.postgres import MIGRATION_LOCK, DatabaseError, migrations
from app.auth.server.pg_store import PostgresAuthStore
from tests.stores.workers import start_stores

STARTERS = 4


def _versions(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT component, version FROM schema_version").fetchall())


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_migrations_are_numbered_from_one() -> None:
    for package in ("app.audit", "app.auth.server"):
        found = migrations(package)
        assert [n for n, _, _ in found] == list(range(1, len(found) + 1))
        assert found, package


def test_a_new_database_is_migrated_at_start(postgres_url: str) -> None:
    PostgresAuditStore(postgres_url).close()
    PostgresAuthStore(postgres_url).close()
    assert _versions(postgres_url) == {
        "audit": len(migrations("app.audit")),
        "auth": len(migrations("app.auth.server")),
    }
    assert _tables(postgres_url) == {"schema_version", "audit_event", "auth_state"}
    PostgresAuditStore(postgres_url).close()  # a second start: nothing to do, nothing fails
    PostgresAuthStore(postgres_url).close()
    assert set(_versions(postgres_url).values()) == {1}


def test_instances_starting_together_migrate_once(postgres_url: str) -> None:
    """Four processes start the stores on one new database at the same moment: all start (without the
    lock, concurrent CREATE TABLEs fail on PostgreSQL's catalog), and the schema is there once."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(STARTERS)
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=start_stores, args=(postgres_url, barrier, results)) for _ in range(STARTERS)]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=300) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
    assert outcomes == ["ok"] * STARTERS
    assert _versions(postgres_url) == {"audit": 1, "auth": 1}
    assert _tables(postgres_url) == {"schema_version", "audit_event", "auth_state"}


def test_a_start_waits_while_another_holds_the_migration_lock(postgres_url: str) -> None:
    holder = psycopg.connect(postgres_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        started: list[Any] = []
        thread = threading.Thread(target=lambda: started.append(PostgresAuthStore(postgres_url)), daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not holder.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone():
            assert time.monotonic() < deadline, "the start never asked for the migration lock"
            assert thread.is_alive(), "the start did not wait for the lock"
            time.sleep(0.05)
        assert not started
        assert _tables(postgres_url) == set()  # nothing migrated while the lock is held
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        thread.join(timeout=120)
        assert len(started) == 1
        started[0].close()
        assert _versions(postgres_url) == {"auth": 1}
    finally:
        holder.close()


def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    PostgresAuditStore(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE schema_version SET version = 99 WHERE component = 'audit'")
    with pytest.raises(DatabaseError, match=r"^audit\.url: .*schema is version 99, newer than this facade's"):
        PostgresAuditStore(postgres_url)


def test_an_unreachable_server_is_named_by_its_key_without_the_password(postgres_server: Any) -> None:
    url = postgres_server.url_of("no_such_database")
    with pytest.raises(DatabaseError) as found:
        PostgresAuthStore(url)
    message = str(found.value)
    assert message.startswith("auth.store: cannot connect to PostgreSQL at 127.0.0.1:")
    assert "no_such_database" in message
    assert postgres_server.password not in message


def test_the_password_may_come_from_pgpassword(postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented way to keep the password out of the configuration: libpq's PGPASSWORD."""
    url = postgres_server.create_database()
    bare = url.replace(f":{postgres_server.password}@", "@", 1)
    assert postgres_server.password not in bare
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(DatabaseError, match=r"^auth\.store: cannot connect to PostgreSQL at 127\.0\.0\.1:"):
        PostgresAuthStore(bare)
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    store = PostgresAuthStore(bare)
    store.put("code", "k", {"a": 1}, 60)
    assert store.take("code", "k") == {"a": 1}
    store.close()

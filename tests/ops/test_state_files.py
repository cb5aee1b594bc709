"""S18 (audit side): the audit store's SQLite files are the facade's own (0600): AuditEvents name patients,
clients and addresses, and were created world-readable (0644) under the usual umask."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.audit.events import AuditRecord, build_events
from app.audit.store import SqliteAuditStore


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_one(store: SqliteAuditStore) -> None:
    record = AuditRecord("read", "Patient", 200, "portal", None, "192.0.2.1", None, "9992975962", ("9992975962",))
    store.write(build_events(record, "http://facade.example/fhir"), "portal")


def test_audit_store_files_are_created_owner_only(tmp_path: Path, usual_umask: None) -> None:
    path = tmp_path / "state" / "audit.sqlite"
    store = SqliteAuditStore(path)
    try:
        write_one(store)
        assert mode(path) == 0o600
        for companion in (path.with_name("audit.sqlite-wal"), path.with_name("audit.sqlite-shm")):
            assert companion.exists() and mode(companion) == 0o600, companion
        assert store.count(patient="9992975962") == 1
    finally:
        store.close()


def test_audit_store_narrows_an_older_world_readable_file(tmp_path: Path, usual_umask: None) -> None:
    path = tmp_path / "audit.sqlite"
    first = SqliteAuditStore(path)
    write_one(first)
    first.close()
    for found in tmp_path.iterdir():
        found.chmod(0o644)  # as the store before S18 left them
    again = SqliteAuditStore(path)
    try:
        assert mode(path) == 0o600
        assert again.count() == 1  # the same trail, kept
        write_one(again)
        assert all(mode(found) == 0o600 for found in tmp_path.iterdir())
    finally:
        again.close()


def test_opening_a_second_store_keeps_the_first_ones_sqlite_locks(tmp_path: Path) -> None:
    """Making the file private must not open it: closing any descriptor of a file drops every POSIX lock
    the process holds on it, SQLite's included. Another process (a gunicorn worker on the same audit
    file) then closing believed itself the last connection, checkpointed and deleted the WAL under this
    process's open stores: 'database disk image is malformed' later in the test run."""
    path = tmp_path / "audit.sqlite"
    first = SqliteAuditStore(path)
    write_one(first)
    SqliteAuditStore(path)  # a second store of the file in this process (another app built from the same settings)
    other_process = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "db.execute(\"INSERT INTO audit_event VALUES ('x', 'r', NULL, NULL, '0', x'00')\"); db.commit(); db.close()"
    )
    done = subprocess.run([sys.executable, "-c", other_process, str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert path.with_name(path.name + "-wal").exists(), "another process removed the WAL this process still uses"
    write_one(first)
    reader = sqlite3.connect(str(path))
    try:
        assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert reader.execute("SELECT count(*) FROM audit_event").fetchone()[0] == 3
    finally:
        reader.close()
        first.close()

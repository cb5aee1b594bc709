"""The embedded server's key file when several workers start at once on a fresh machine: one key for all."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from app.auth.server.keys import SigningKeys


def _current_kid(path: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:
    start.wait()
    out.put(str(SigningKeys(Path(path)).current.kid))


def test_workers_starting_together_share_one_signing_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    path = tmp_path / "state" / "signing-keys.json"
    start, out = context.Event(), context.Queue()
    workers = [context.Process(target=_current_kid, args=(str(path), start, out)) for _ in range(6)]
    for worker in workers:
        worker.start()
    start.set()
    kids = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert len(set(kids)) == 1, kids
    assert SigningKeys(path).current.kid == kids[0]
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging files left behind


def test_rotation_keeps_the_previous_key_published(tmp_path: Path) -> None:
    keys = SigningKeys(tmp_path / "keys.json")
    first = keys.current.kid
    second = keys.rotate()
    assert keys.current.kid == second != first
    assert [k["kid"] for k in keys.public_jwks()["keys"]] == [second, first]
    assert (keys.path.stat().st_mode & 0o777) == 0o600

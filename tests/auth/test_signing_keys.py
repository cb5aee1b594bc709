"""The embedded server's key file: one key for all workers starting together on a fresh machine;
rotation and retirement written safely and picked up by a running process within the check interval
(never on every call), including by a validator that had already verified a token."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

import app.auth.server.keys as keys_module
from app.auth.server.keys import CHECK_INTERVAL_S, RetireRefused, SigningKeys, UnknownKey, new_kid
from app.auth.tokens import InvalidToken, JwtValidator

ISSUER = "http://127.0.0.1:8080/fhir"


def _current_kid(path: str, start: multiprocessing.synchronize.Event, out: multiprocessing.queues.Queue[str]) -> None:
    start.wait()
    out.put(str(SigningKeys(Path(path)).current.kid))


def _rotate(path: str, start: multiprocessing.synchronize.Event, out: multiprocessing.queues.Queue[str]) -> None:
    keys = SigningKeys(Path(path))
    start.wait()
    out.put(keys.rotate())


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


class FrozenClock:
    """Stands in for `time` inside app/auth/server/keys.py: monotonic() moves only when told to."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(keys_module, "time", frozen)
    return frozen


def test_a_running_process_sees_another_process_rotate_within_the_check_interval(
    tmp_path: Path, clock: FrozenClock
) -> None:
    path = tmp_path / "keys.json"
    serving = SigningKeys(path)  # a worker of the running server
    first = str(serving.current.kid)
    second = SigningKeys(path).rotate()  # `python -m app rotate-keys`, another process
    for _ in range(100):  # the file is not looked at again before the interval is over
        assert serving.current.kid == first
    assert serving.kids() == [first]
    clock.advance(CHECK_INTERVAL_S)
    assert serving.current.kid == second
    assert serving.kids() == [second, first]
    assert [k["kid"] for k in serving.public_jwks()["keys"]] == [second, first]
    same = serving.key_set(None)
    clock.advance(CHECK_INTERVAL_S)  # checked again, unchanged: the same key set (verified tokens stay verified)
    assert serving.key_set(None) is same


def _access_token(key: RSAKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(8),
        "client_id": "portal",
        "scope": "system/Organization.rs",
        **claims,
    }
    return jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, payload, key, algorithms=["RS384"])


def test_a_validator_refuses_a_retired_keys_token_it_had_already_verified(tmp_path: Path, clock: FrozenClock) -> None:
    path = tmp_path / "keys.json"
    serving = SigningKeys(path)
    validator = JwtValidator(ISSUER, ISSUER, serving)
    old = serving.current
    token_a = _access_token(old)
    assert validator.validate(token_a).client_id == "portal"  # verified once, then remembered
    operator = SigningKeys(path)
    new_kid = operator.rotate()
    clock.advance(CHECK_INTERVAL_S)
    token_b = _access_token(serving.current)
    assert serving.current.kid == new_kid
    assert validator.validate(token_b).client_id == "portal"
    assert validator.validate(token_a).client_id == "portal"  # the previous key is still published
    assert operator.retire(str(old.kid)) == [new_kid]
    assert validator.validate(token_a).client_id == "portal"  # until this process looks at the file again
    clock.advance(CHECK_INTERVAL_S)
    for _ in range(2):  # refused from now on, remembered verification or not
        with pytest.raises(InvalidToken, match="signing key"):
            validator.validate(token_a)
    assert validator.validate(token_b).client_id == "portal"
    assert serving.kids() == [new_kid]


def test_retire_refuses_the_current_and_the_only_key_and_names_unknown_kids(tmp_path: Path) -> None:
    keys = SigningKeys(tmp_path / "keys.json")
    only = str(keys.current.kid)
    before = keys.path.read_bytes()
    with pytest.raises(RetireRefused, match="only signing key"):
        keys.retire(only)
    with pytest.raises(UnknownKey, match="no-such-kid"):
        keys.retire("no-such-kid")
    assert keys.path.read_bytes() == before  # refusals leave the file alone
    new = keys.rotate()
    rotated = keys.path.read_bytes()
    with pytest.raises(RetireRefused, match="current signing key"):
        keys.retire(new)
    assert keys.path.read_bytes() == rotated
    assert keys.retire(only) == [new]
    assert keys.kids() == [new]
    assert [k["kid"] for k in json.loads(keys.path.read_text())["keys"]] == [new]
    assert [k["kid"] for k in keys.public_jwks()["keys"]] == [new]
    assert (keys.path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in keys.path.parent.iterdir()] == [keys.path.name]


def test_rotations_at_the_same_time_lose_no_key(tmp_path: Path) -> None:
    """Each rotation rewrites the whole file: without the lock, one would overwrite another's new key."""
    context = multiprocessing.get_context("fork")
    path = tmp_path / "keys.json"
    first = str(SigningKeys(path).current.kid)
    start, out = context.Event(), context.Queue()
    rotators = [context.Process(target=_rotate, args=(str(path), start, out)) for _ in range(4)]
    for rotator in rotators:
        rotator.start()
    start.set()
    new = {out.get(timeout=120) for _ in rotators}
    for rotator in rotators:
        rotator.join(timeout=30)
    assert len(new) == 4
    kids = SigningKeys(path).kids()
    assert set(kids) == new | {first} and len(kids) == 5
    assert kids[-1] == first


def test_new_kids_can_be_given_on_a_command_line() -> None:
    """`rotate-keys CONFIG --retire KID` reads a kid that starts with '-' as an option: none may (a
    url-safe kid did one time in 64, and the live rotation test failed on it)."""
    kids = [new_kid() for _ in range(2000)]
    assert all(kid.isalnum() and not kid.startswith("-") for kid in kids)
    assert len(set(kids)) == len(kids)

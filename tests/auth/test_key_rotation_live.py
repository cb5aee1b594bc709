"""Key rotation on a running server: `python -m app serve --workers 2` (gunicorn) and the real
`python -m app rotate-keys CONFIG [--retire KID]` in another process, no restart.

After a rotation every worker signs new tokens with the new key and accepts them, and tokens of the
previous key stay valid; after `--retire` every worker refuses the retired key's tokens (401) and no
longer publishes it. Which worker answered a request is read from the access log (the request's
X-Request-ID and the worker's pid); requests close their connection, so that both workers answer.
The configuration and its key file live in the test's temporary folder. The CLI's refusals (current
key, only key, unknown kid) are checked on a key file without a server.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from embedded_support import jwt_parts
from joserfc import jwt
from joserfc.jwk import RSAKey

from app.auth.server.keys import SigningKeys
from tests.infra import free_port, log_tail, stop_process_group

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PORTAL_KEY_FILE = ROOT / "config" / "demo-keys" / "portal.private.jwk.json"
SCOPE = "system/Organization.rs"  # /fhir/Organization: a protected route that asks no archive
START_TIMEOUT_S = 180
CONVERGE_TIMEOUT_S = 60  # polling deadline; the workers look at the key file once a second
MAX_REQUESTS = 300  # per "every worker" check: enough fresh connections for both workers to answer


@dataclass
class Live:
    process: subprocess.Popen[bytes]
    origin: str
    config: Path
    keys_path: Path
    log: Path
    workers: set[int]

    @property
    def fhir(self) -> str:
        return f"{self.origin}/fhir"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FACADE_", "PROMETHEUS_"))}


def _lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.strip()]


def _ready_workers(log: Path) -> set[int]:
    text = log.read_text(errors="replace")
    return {int(m.group(1)) for m in re.finditer(r'"message":"facade ready[^\n]*"pid":(\d+)', text)}


def _document(config_document: dict[str, Any], folder: Path, port: int) -> dict[str, Any]:
    """The demo configuration with one (empty) folder trust, and keys, state and audit in `folder`."""
    doc = copy.deepcopy(config_document)
    doc["base_url"] = f"http://127.0.0.1:{port}/fhir"
    archive = folder / "bolton"
    archive.mkdir()
    doc["trusts"] = [dict(t, archive={"type": "folder", "path": str(archive)}) for t in doc["trusts"][:1]]
    doc.pop("patient_xref", None)
    doc["audit"] = {"path": str(folder / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(folder / "signing-keys.json")
    doc["auth"]["store"] = f"sqlite:{folder / 'auth-state.sqlite'}"
    return doc


@pytest.fixture
def live(config_document: dict[str, Any], tmp_path: Path) -> Iterator[Live]:
    port = free_port()
    doc = _document(config_document, tmp_path, port)
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--config", str(config), "--port", str(port)]
            + ["--workers", "2", "--threads", "4"],
            cwd=ROOT,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(_ready_workers(log)) < 2:
            assert process.poll() is None, f"server exited:\n{log_tail(log, 60)}"
            assert time.monotonic() < deadline, f"workers not ready:\n{log_tail(log, 60)}"
            time.sleep(0.3)
        yield Live(
            process, f"http://127.0.0.1:{port}", config, Path(doc["auth"]["signing_keys"]), log, _ready_workers(log)
        )
    finally:
        stop_process_group(process)


# ----------------------------------------------------------------------------- talking to the server


def _served_by(live: Live, request_ids: list[str]) -> list[int]:
    """The pid of the worker that answered each request (its access log line may come a little later)."""
    deadline = time.monotonic() + 30
    while True:
        found = {line["request_id"]: line["pid"] for line in _lines(live.log) if line.get("logger") == "app.access"}
        if all(r in found for r in request_ids):
            return [int(found[r]) for r in request_ids]
        assert time.monotonic() < deadline, f"no access log line for some of {request_ids}:\n{log_tail(live.log)}"
        time.sleep(0.1)


def _send(method: str, url: str, **kwargs: Any) -> tuple[requests.Response, str]:
    """One request on a fresh connection, with a request id of its own."""
    request_id = f"rotation-{uuid.uuid4()}"
    headers = {"Connection": "close", "X-Request-ID": request_id, **kwargs.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=30, **kwargs), request_id


def _on_every_worker(
    live: Live, send: Callable[[], tuple[requests.Response, str]], check: Callable[[requests.Response], None]
) -> int:
    """Sends until both workers have answered; every answer must pass `check`. The requests sent."""
    sent: list[str] = []
    answered: set[int] = set()
    while answered != live.workers and len(sent) < MAX_REQUESTS:
        batch = []
        for _ in range(10):
            response, request_id = send()
            check(response)
            batch.append(request_id)
        sent += batch
        answered |= set(_served_by(live, batch))
    assert answered == live.workers, f"only workers {answered} of {live.workers} answered {len(sent)} requests"
    return len(sent)


def _search(live: Live, token: str) -> tuple[requests.Response, str]:
    return _send(
        "GET",
        f"{live.fhir}/Organization",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
    )


def _accepted(response: requests.Response) -> None:
    assert response.status_code == 200, (response.status_code, response.text[:500])
    assert response.json()["resourceType"] == "Bundle"


def _refused(response: requests.Response) -> None:
    assert response.status_code == 401, (response.status_code, response.text[:500])
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "signing key (kid) is not one of the issuer's keys" in response.headers["WWW-Authenticate"]


def _published(kids: list[str]) -> Callable[[requests.Response], None]:
    def check(response: requests.Response) -> None:
        assert response.status_code == 200
        assert [k["kid"] for k in response.json()["keys"]] == kids
        assert all("d" not in k for k in response.json()["keys"])  # public halves only

    return check


def _mint(live: Live, token_url: str) -> tuple[str, int]:
    """A backend services token of the portal client, as `python -m app token` gets one, and the pid of
    the worker that signed it."""
    key = RSAKey.import_key(json.loads(PORTAL_KEY_FILE.read_text(encoding="utf-8")))
    now = int(time.time())
    claims = {
        "iss": "portal",
        "sub": "portal",
        "aud": token_url,
        "iat": now,
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
    }
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])
    response, request_id = _send(
        "POST",
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )
    assert response.status_code == 200, response.text[:500]
    return str(response.json()["access_token"]), _served_by(live, [request_id])[0]


def _kid(token: str) -> str:
    return str(jwt_parts(token)[0]["kid"])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )


def _file_kids(path: Path) -> list[str]:
    return [k["kid"] for k in json.loads(path.read_text(encoding="utf-8"))["keys"]]


# ----------------------------------------------------------------------------- the tests


def test_rotate_then_retire_on_a_running_two_worker_server(live: Live) -> None:
    old_kid = _file_kids(live.keys_path)[0]
    got = _cli("token", "--base", live.fhir, "--client", "portal", "--key", str(PORTAL_KEY_FILE), "--scope", SCOPE)
    assert got.returncode == 0, got.stderr
    token_a = got.stdout.strip()
    assert _kid(token_a) == old_kid
    _on_every_worker(live, partial(_search, live, token_a), _accepted)

    rotated = _cli("rotate-keys", str(live.config))
    assert rotated.returncode == 0, rotated.stderr
    new_kid = _file_kids(live.keys_path)[0]
    assert new_kid != old_kid and new_kid in rotated.stdout
    assert _file_kids(live.keys_path) == [new_kid, old_kid]

    # Every worker signs with the new key once it has looked at the file again.
    token_url = requests.get(f"{live.fhir}/.well-known/smart-configuration", timeout=30).json()["token_endpoint"]
    signed_new: dict[int, str] = {}
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while set(signed_new) != live.workers:
        assert time.monotonic() < deadline, f"only workers {set(signed_new)} sign with {new_kid}"
        token, pid = _mint(live, token_url)
        assert _kid(token) in (new_kid, old_kid)
        if _kid(token) == new_kid:
            signed_new[pid] = token
        else:
            assert pid not in signed_new, "a worker went back to the previous key"
            time.sleep(0.1)

    # Each worker's new token is accepted by both workers; the old token too (its key is still published).
    for token in signed_new.values():
        _on_every_worker(live, partial(_search, live, token), _accepted)
    _on_every_worker(live, partial(_search, live, token_a), _accepted)
    _on_every_worker(live, lambda: _send("GET", f"{live.origin}/auth/jwks"), _published([new_kid, old_kid]))

    retired = _cli("rotate-keys", str(live.config), "--retire", old_kid)
    assert retired.returncode == 0, retired.stderr
    assert old_kid in retired.stdout
    assert _file_kids(live.keys_path) == [new_kid]

    # Poll until each worker refuses the old token; once one has, it never accepts it again.
    refused_by: set[int] = set()
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while refused_by != live.workers:
        assert time.monotonic() < deadline, f"only workers {refused_by} refuse the retired key's token"
        response, request_id = _search(live, token_a)
        (pid,) = _served_by(live, [request_id])
        if response.status_code == 401:
            _refused(response)
            refused_by.add(pid)
        else:
            _accepted(response)
            assert pid not in refused_by, "a worker accepted the retired key's token again"
            time.sleep(0.1)

    _on_every_worker(live, partial(_search, live, token_a), _refused)
    for token in signed_new.values():
        _on_every_worker(live, partial(_search, live, token), _accepted)
    _on_every_worker(live, lambda: _send("GET", f"{live.origin}/auth/jwks"), _published([new_kid]))
    token, _pid = _mint(live, token_url)
    assert _kid(token) == new_kid
    assert live.process.poll() is None  # the same server all along: no restart


def test_rotate_keys_retire_refusals(config_document: dict[str, Any], tmp_path: Path) -> None:
    doc = _document(config_document, tmp_path, 8080)
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    path = Path(doc["auth"]["signing_keys"])

    missing = _cli("rotate-keys", str(config), "--retire", "anything")
    assert missing.returncode == 1
    assert "no signing keys file" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    assert not path.exists()  # retiring never creates a key file

    only = SigningKeys(path).current.kid
    refused = _cli("rotate-keys", str(config), "--retire", str(only))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert f"key {only} is the only signing key" in refused.stderr

    assert _cli("rotate-keys", str(config)).returncode == 0
    current, previous = _file_kids(path)
    assert previous == only
    before = path.read_bytes()
    refused = _cli("rotate-keys", str(config), "--retire", current)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1
    assert f"key {current} is the current signing key" in refused.stderr

    unknown = _cli("rotate-keys", str(config), "--retire", "no-such-kid")
    assert unknown.returncode == 1
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert "no signing key 'no-such-kid'" in unknown.stderr
    assert path.read_bytes() == before  # refusals leave the file as it was

    done = _cli("rotate-keys", str(config), "--retire", previous)
    assert done.returncode == 0, done.stderr
    assert _file_kids(path) == [current]

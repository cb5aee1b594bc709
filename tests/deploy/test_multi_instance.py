"""Several instances behind nginx, proven natively (tests/deploy/native.py: the compose topology on
loopback, from the same templates): nginx, two gunicorn facade instances, PostgreSQL (audit trail and
authorization state), Redis (rate limits) and three Orthanc trust archives.

- a token issued through instance A is accepted by B; refresh rotation and reuse detection hold across
  the instances; a client-assertion jti used at one is refused at the other; rate limits are shared;
- 400 GET searches for one patient through nginx while instance B is SIGKILLed (its whole process group)
  and later restarted: every response is 200 (nginx retries idempotent requests on A), and the audit
  events naming that patient in PostgreSQL number at least the successful responses and at most one more
  per request in flight at the kill;
- /fhir/AuditEvent on either instance finds the events written through both.

The kill-and-restart figures are printed (pytest -s shows them) for the closing note of the issue.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml

from tests.deploy.native import NativeStack
from tests.deploy.support import ROOT

pytestmark = pytest.mark.integration

PORTAL_KEY = ROOT / "config" / "demo-keys" / "portal.private.jwk.json"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SYSTEM_SCOPE = "system/ImagingStudy.rs system/Patient.rs system/Endpoint.rs system/AuditEvent.rs"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
TIMEOUT_S = 60
SEARCHES = 400
CLIENTS = 4  # concurrent searchers
KILL_AT, RESTART_AT = 100, 250  # searches answered before the kill, before the restart


@pytest.fixture(scope="module")
def stack() -> Iterator[NativeStack]:
    with NativeStack() as running:
        yield running


@pytest.fixture(scope="module")
def manifest(stack: NativeStack) -> dict[str, Any]:
    return json.loads((stack.workdir / "seed" / "demo-data" / "manifest.json").read_text())


def _patients_at(manifest: dict[str, Any], trusts: set[str]) -> list[str]:
    """NHS numbers of patients with a study held by one of `trusts` (the three archives of the stack)."""
    return [
        p["nhs_number"] for p in manifest["patients"] if any(set(study["trusts"]) & trusts for study in p["studies"])
    ]


@pytest.fixture(scope="module")
def patients(manifest: dict[str, Any]) -> list[str]:
    found = _patients_at(manifest, {"bolton", "christie", "mft"})
    multi = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    assert multi in found and len(found) >= 6
    return [multi] + [p for p in found if p != multi]


def client_assertion(token_url: str, jti: str | None = None) -> str:
    from joserfc import jwt
    from joserfc.jwk import import_key

    key = import_key(json.loads(PORTAL_KEY.read_text()))
    now = int(time.time())
    claims = {"iss": "portal", "sub": "portal", "aud": token_url, "exp": now + 240, "iat": now,
              "jti": jti or str(uuid.uuid4())}  # fmt: skip
    return jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])


def backend_token(post_to: str, stack: NativeStack, assertion: str | None = None) -> requests.Response:
    """client_credentials posted to `post_to` (an instance or nginx); the assertion's audience is the
    public token endpoint, whoever receives it."""
    return requests.post(
        post_to,
        timeout=TIMEOUT_S,
        data={
            "grant_type": "client_credentials",
            "scope": SYSTEM_SCOPE,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or client_assertion(stack.token_url),
        },
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


def _token(stack: NativeStack) -> str:
    response = backend_token(stack.token_url, stack)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _audit_count(stack: NativeStack, patient: str) -> int:
    with stack.postgres.connect() as conn:
        row = conn.execute("SELECT count(*) FROM audit_event WHERE patient = %s", (patient,)).fetchone()
    assert row is not None
    return int(row[0])


# -- the stack is what compose describes --------------------------------------------------------------
def test_both_instances_serve_one_public_address_from_the_template(stack):
    a, b = stack.instances
    config = yaml.safe_load(stack.config_path.read_text())
    assert config["base_url"] == stack.base_url and config["ops"]["trusted_proxies"] == 1
    assert config["audit"]["url"].startswith("postgresql://") and config["auth"]["store"].startswith("postgresql://")
    jwks = [requests.get(i.url("/auth/jwks"), timeout=TIMEOUT_S).json() for i in (a, b)]
    assert jwks[0] == jwks[1] and jwks[0]["keys"], "one signing key file for both"
    discovery = requests.get(f"{stack.base_url}/.well-known/smart-configuration", timeout=TIMEOUT_S).json()
    assert discovery["token_endpoint"] == stack.token_url
    assert "seed_archives: bolton" in stack.seed_output and "christie" in stack.seed_output


# -- authorization state shared through PostgreSQL ----------------------------------------------------
def test_a_token_issued_through_a_is_accepted_by_b(stack, patients):
    a, b = stack.instances
    issued = backend_token(a.url("/auth/token"), stack)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    read = requests.get(b.url(f"/fhir/Patient/{patients[1]}"), headers=_bearer(token), timeout=TIMEOUT_S)
    assert read.status_code == 200, read.text
    assert read.json()["id"] == patients[1]
    # Revoked through B, refused by A (the revocation is shared too).
    revoked = requests.post(
        b.url("/auth/revoke"),
        timeout=TIMEOUT_S,
        data={"token": token, "token_type_hint": "access_token", "client_assertion_type": ASSERTION_TYPE,
              "client_assertion": client_assertion(stack.token_url)},
    )  # fmt: skip
    assert revoked.status_code == 200, revoked.text
    refused = requests.get(a.url(f"/fhir/Patient/{patients[1]}"), headers=_bearer(token), timeout=TIMEOUT_S)
    assert refused.status_code == 401


def test_a_client_assertion_jti_replayed_at_the_other_instance_is_refused(stack):
    a, b = stack.instances
    assertion = client_assertion(stack.token_url)
    first = backend_token(a.url("/auth/token"), stack, assertion)
    assert first.status_code == 200, first.text
    replay = backend_token(b.url("/auth/token"), stack, assertion)
    assert replay.status_code == 400, replay.text
    assert replay.json()["error"] == "invalid_client"
    other = client_assertion(stack.token_url)
    assert backend_token(b.url("/auth/token"), stack, other).status_code == 200
    assert backend_token(a.url("/auth/token"), stack, other).status_code == 400


def _csrf(page: requests.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:2000]
    return found.group(1)


def _sign_in(stack: NativeStack, first: Any, second: Any, patient: str) -> dict[str, Any]:
    """A standalone launch of the sample app, its steps alternating between the instances: sign-in on
    `first`, patient choice on `second`, consent (code) on `first`, code redeemed on `second`."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": "imaging-timeline",
        "redirect_uri": f"{stack.public}/apps/imaging-timeline/",
        "aud": stack.base_url,
        "scope": "launch/patient patient/*.rs openid fhirUser offline_access",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    browser = requests.Session()
    login = browser.get(first.url("/auth/authorize"), params=params, timeout=TIMEOUT_S)
    assert login.status_code == 200 and 'id="username"' in login.text, login.text[:1000]
    picker = browser.post(
        first.url("/auth/authorize"),
        timeout=TIMEOUT_S,
        data={**params, "csrf": _csrf(login), "step": "login", "username": "dr.khan", "password": "imaging-demo"},
    )
    assert 'id="q"' in picker.text, picker.text[:1000]
    consent = browser.post(
        second.url("/auth/authorize"), timeout=TIMEOUT_S, data={**params, "csrf": _csrf(picker), "patient": patient}
    )
    assert 'id="allow"' in consent.text, consent.text[:1000]
    allowed = browser.post(
        first.url("/auth/authorize"),
        allow_redirects=False,
        timeout=TIMEOUT_S,
        data={**params, "csrf": _csrf(consent), "step": "consent", "decision": "allow", "patient": patient},
    )
    assert allowed.status_code == 302, allowed.text[:1000]
    code = parse_qs(urlsplit(allowed.headers["Location"]).query)["code"][0]
    tokens = requests.post(
        second.url("/auth/token"),
        timeout=TIMEOUT_S,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": params["redirect_uri"],
              "client_id": "imaging-timeline", "code_verifier": verifier},
    )  # fmt: skip
    assert tokens.status_code == 200, tokens.text
    body: dict[str, Any] = tokens.json()
    assert body["patient"] == patient and body["refresh_token"]
    return body


def _refresh(instance: Any, refresh_token: str) -> requests.Response:
    return requests.post(
        instance.url("/auth/token"),
        timeout=TIMEOUT_S,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "imaging-timeline"},
    )


def test_refresh_rotation_and_reuse_detection_hold_across_instances(stack, patients):
    a, b = stack.instances
    tokens = _sign_in(stack, a, b, patients[2])
    # Rotation across instances keeps working: A rotates, B rotates the new one.
    rotated = _refresh(a, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    again = _refresh(b, rotated.json()["refresh_token"])
    assert again.status_code == 200, again.text
    newest = again.json()["refresh_token"]
    assert len({tokens["refresh_token"], rotated.json()["refresh_token"], newest}) == 3
    # Reuse of a rotated one at the other instance: refused, and the whole family revoked on both.
    reused = _refresh(b, rotated.json()["refresh_token"])
    assert reused.status_code == 400, reused.text
    assert reused.json()["error"] == "invalid_grant"
    assert _refresh(a, newest).status_code == 400
    assert _refresh(b, newest).status_code == 400


def test_rate_limits_are_shared_by_the_instances(stack):
    """One client address (X-Forwarded-For, read with trusted_proxies: 1) sends 3 x burst unauthenticated
    requests, alternately to A and B. One shared bucket lets through at most burst plus its refill over the
    run; two buckets, one per instance, would let through twice that (each half of the requests meets a full
    bucket of its own). The refill is counted from the measured duration, so the bound always holds for a
    shared bucket; it tells the two apart while the run takes less than 2 x burst / rate (60 s here)."""
    config = yaml.safe_load(stack.config_path.read_text())["ops"]["rate_limit"]
    burst, per_s = config["burst"], config["requests_per_minute"] / 60
    address = f"198.51.100.{secrets.randbelow(250) + 1}"
    a, b = stack.instances
    local = threading.local()

    def call(i: int) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        target = (a, b)[i % 2]
        return session.get(
            target.url("/fhir/Patient"), headers={"X-Forwarded-For": address}, timeout=TIMEOUT_S
        ).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(call, range(3 * burst)))
    elapsed = time.monotonic() - started
    assert set(statuses) <= {401, 429}, set(statuses)
    let_through = statuses.count(401)
    print(
        f"\nrate limit: {3 * burst} requests in {elapsed:.1f} s, {let_through} let through, {statuses.count(429)} refused"
    )
    assert let_through <= burst + per_s * elapsed + 1, "more than one bucket lets through"
    assert statuses.count(429) > 0
    # Another address has a bucket of its own.
    assert (
        requests.get(
            a.url("/fhir/Patient"), headers={"X-Forwarded-For": "198.51.100.251"}, timeout=TIMEOUT_S
        ).status_code
        == 401
    )


# -- an instance killed and restarted under load ----------------------------------------------------
def test_searches_through_nginx_survive_an_instance_killed_and_restarted(stack, patients):
    _a, b = stack.instances
    patient = patients[0]
    token = _token(stack)
    url = f"{stack.base_url}/ImagingStudy"
    params = {"patient.identifier": f"{NHS}|{patient}", "_include": "ImagingStudy:endpoint"}
    # One search, one AuditEvent naming the patient: what the bounds below count on.
    before_probe = _audit_count(stack, patient)
    probe = requests.get(url, params=params, headers=_bearer(token), timeout=TIMEOUT_S)
    assert probe.status_code == 200 and probe.json()["total"] > 0, probe.text[:500]
    assert _audit_count(stack, patient) == before_probe + 1
    before = _audit_count(stack, patient)

    lock = threading.Lock()
    in_flight: set[int] = set()
    answered: list[int] = []
    statuses: dict[int, int] = {}
    kill_snapshot: dict[str, int] = {}
    killed = threading.Event()
    restarted = threading.Event()
    local = threading.local()

    def search(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        with lock:
            in_flight.add(i)
        try:
            status = session.get(url, params=params, headers=_bearer(token), timeout=TIMEOUT_S).status_code
        except requests.RequestException as error:
            status = -1
            print(f"search {i}: {error!r}")
        with lock:
            in_flight.discard(i)
            statuses[i] = status
            answered.append(i)
            count = len(answered)
        if count == KILL_AT and not killed.is_set():
            with lock:
                kill_snapshot["in_flight"] = len(in_flight)
                b.kill()
                kill_snapshot["at"] = count
            killed.set()
        if count == RESTART_AT and not restarted.is_set():
            restarted.set()
            threading.Thread(target=b.start, daemon=True).start()  # while the searches go on

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(search, range(SEARCHES)))
    elapsed = time.monotonic() - started
    assert killed.is_set() and restarted.is_set()
    b.wait_ready()
    assert b.process is not None and b.process.poll() is None, "B serves again after its restart"
    assert b.starts == 2

    # nginx's log: which instance answered, and the attempts it retried on the other one.
    assert stack.nginx is not None
    logged = stack.nginx.upstreams("/fhir/ImagingStudy")[-SEARCHES:]
    b_address = f"127.0.0.1:{b.port}"
    answered_by_b = sum(1 for _status, tried, _ in logged if tried[-1] == b_address)
    retried = sum(1 for _status, tried, _ in logged if len(tried) > 1)
    successes = sum(1 for s in statuses.values() if s == 200)
    failures = SEARCHES - successes
    audited = _audit_count(stack, patient) - before
    in_flight_at_kill = kill_snapshot["in_flight"]
    print(
        f"\nkill-and-restart: {SEARCHES} searches ({CLIENTS} clients, {elapsed:.1f} s), {successes} answered 200, "
        f"{failures} failed; instance B SIGKILLed (process group) after {kill_snapshot['at']} answers with "
        f"{in_flight_at_kill} requests in flight, restarted after {RESTART_AT}; audit events naming the patient "
        f"in PostgreSQL: {audited}; nginx: {answered_by_b} answered by B, {retried} retried on the other instance"
    )
    assert failures == 0, {i: s for i, s in statuses.items() if s != 200}
    assert successes <= audited <= successes + in_flight_at_kill
    assert len(logged) == SEARCHES and 0 < answered_by_b < SEARCHES, "both instances took part"
    # After its restart B answers through nginx again (and directly).
    assert requests.get(b.url(f"/fhir/Patient/{patient}"), headers=_bearer(token), timeout=TIMEOUT_S).status_code == 200


def test_audit_events_written_through_either_instance_are_found_on_both(stack, patients):
    a, b = stack.instances
    token = _token(stack)
    through_a, through_b = patients[3], patients[4]
    assert (
        requests.get(a.url(f"/fhir/Patient/{through_a}"), headers=_bearer(token), timeout=TIMEOUT_S).status_code == 200
    )
    assert (
        requests.get(b.url(f"/fhir/Patient/{through_b}"), headers=_bearer(token), timeout=TIMEOUT_S).status_code == 200
    )
    for instance in (a, b):
        for patient in (through_a, through_b):
            bundle = requests.get(
                instance.url("/fhir/AuditEvent"), params={"patient": patient}, headers=_bearer(token), timeout=TIMEOUT_S
            ).json()
            assert bundle["resourceType"] == "Bundle" and bundle["total"] >= 1, (instance.name, patient, bundle)
            references = {
                entity["what"]["reference"]
                for entry in bundle["entry"]
                for entity in entry["resource"].get("entity", ())
                if "what" in entity and "reference" in entity["what"]
            }
            assert f"Patient/{patient}" in references

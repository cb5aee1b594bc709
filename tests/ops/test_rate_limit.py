"""The rate limit: a token bucket per client (token client_id, else remote address), 429 with
Retry-After and an OperationOutcome; per process by default, shared through a real Redis.

Buckets refill at one request a minute in these tests, so no test depends on how fast it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.settings import settings_from_document
from tests.infra.redis_server import RedisServer
from tests.ops.support import bearer, sample, scrape

pytestmark = pytest.mark.integration
SLOW = {"requests_per_minute": 1, "burst": 2}


def _refused(response: Any) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "throttled"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def test_rate_limit_off_by_default_and_in_the_demo(settings, build_app):
    assert settings.ops.rate_limit is None  # config/demo.yaml: the demo and the test suite never trip it
    app = build_app()
    client = app.test_client()
    assert all(client.get("/fhir/metadata").status_code == 200 for _ in range(20))


def test_rate_limit_refuses_a_client_after_its_burst(build_app):
    app = build_app(ops={"rate_limit": SLOW})
    client, auth = app.test_client(), bearer(app)
    assert [client.get("/fhir/Organization", headers=auth).status_code for _ in range(2)] == [200, 200]
    _refused(client.get("/fhir/Organization", headers=auth))
    _refused(client.get("/fhir/Endpoint", headers=auth))  # every route draws from the same bucket


def test_rate_limit_is_per_client(build_app):
    app = build_app(ops={"rate_limit": SLOW})
    client, portal = app.test_client(), bearer(app)
    other = bearer(app, client="imaging-timeline", scope="user/*.rs")
    for _ in range(2):
        assert client.get("/fhir/Organization", headers=portal).status_code == 200
    _refused(client.get("/fhir/Organization", headers=portal))
    assert client.get("/fhir/Organization", headers=other).status_code == 200  # its own bucket


def test_rate_limit_keys_a_client_not_its_address(build_app):
    app = build_app(ops={"rate_limit": SLOW})
    client, auth = app.test_client(), bearer(app)
    for address in ("192.0.2.1", "192.0.2.2"):
        assert client.get("/fhir/Organization", headers=auth, environ_base={"REMOTE_ADDR": address}).status_code == 200
    _refused(client.get("/fhir/Organization", headers=auth, environ_base={"REMOTE_ADDR": "192.0.2.3"}))


def test_rate_limit_unauthenticated_calls_by_address(build_app):
    app = build_app(ops={"rate_limit": SLOW})
    client = app.test_client()
    one, two = {"REMOTE_ADDR": "192.0.2.10"}, {"REMOTE_ADDR": "192.0.2.11"}
    assert [client.get("/fhir/metadata", environ_base=one).status_code for _ in range(2)] == [200, 200]
    _refused(client.get("/fhir/metadata", environ_base=one))
    _refused(client.get("/auth/authorize", environ_base=one))  # the authorization server too
    assert client.get("/fhir/metadata", environ_base=two).status_code == 200


def test_rate_limit_refused_tokens_count_against_their_address(build_app):
    app = build_app(ops={"rate_limit": SLOW})
    client, bad = app.test_client(), {"Authorization": "Bearer not.a.token"}
    here = {"REMOTE_ADDR": "192.0.2.20"}
    assert [client.get("/fhir/ImagingStudy", headers=bad, environ_base=here).status_code for _ in range(2)] == [
        401,
        401,
    ]
    _refused(client.get("/fhir/ImagingStudy", headers=bad, environ_base=here))
    # A valid token from the same address is the client's own bucket, untouched.
    assert client.get("/fhir/Organization", headers=bearer(app), environ_base=here).status_code == 200


def test_rate_limit_refusal_of_a_refused_token_keeps_cors(build_app, ops_document):
    ops_document["auth"]["cors_origins"] = ["https://epr.example"]
    app = build_app(ops={"rate_limit": SLOW})
    client = app.test_client()
    headers = {"Authorization": "Bearer not.a.token", "Origin": "https://epr.example"}
    for _ in range(2):
        assert client.get("/fhir/ImagingStudy", headers=headers).status_code == 401
    response = client.get("/fhir/ImagingStudy", headers=headers)
    _refused(response)
    assert response.headers["Access-Control-Allow-Origin"] == "https://epr.example"


def test_rate_limit_never_applies_to_operations_endpoints(build_app):
    app = build_app(ops={"rate_limit": SLOW})
    client = app.test_client()
    for _ in range(3):
        client.get("/fhir/metadata")
    _refused(client.get("/fhir/metadata"))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert all(client.get(path).status_code == 200 for _ in range(5)), path


def test_rate_limit_refusals_counted_in_metrics(build_app):
    app = build_app(ops={"rate_limit": SLOW})
    client, auth = app.test_client(), bearer(app)
    before = scrape(client.get("/metrics").get_data(as_text=True))
    for _ in range(4):
        client.get("/fhir/Organization", headers=auth)
    after = scrape(client.get("/metrics").get_data(as_text=True))
    assert (
        sample(after, "facade_rate_limited_total", key="client")
        == sample(before, "facade_rate_limited_total", key="client") + 2
    )
    labels = {"method": "GET", "route": "/fhir/Organization", "status": "429"}
    assert (
        sample(after, "facade_http_requests_total", **labels)
        == sample(before, "facade_http_requests_total", **labels) + 2
    )


def test_rate_limit_default_burst_is_ten_seconds_of_requests(ops_document, demo_data):
    ops_document["ops"] = {"rate_limit": {"requests_per_minute": 600}}
    limit = settings_from_document(ops_document, demo_data).ops.rate_limit
    assert limit is not None and (limit.burst, limit.store) == (100, "memory")


def test_rate_limit_store_follows_a_redis_auth_store(ops_document, demo_data):
    ops_document["auth"]["store"] = "redis://127.0.0.1:6390/2"
    ops_document["ops"] = {"rate_limit": {"requests_per_minute": 60}}
    limit = settings_from_document(ops_document, demo_data).ops.rate_limit
    assert limit is not None and limit.store == "redis://127.0.0.1:6390/2"


def test_rate_limit_shared_by_two_processes_through_redis(build_app, redis_url):
    # Two apps stand for two gunicorn workers (or two facade hosts): one bucket per client in Redis.
    limit = {**SLOW, "store": redis_url}
    first, second = build_app(ops={"rate_limit": limit}), build_app(ops={"rate_limit": limit})
    auth = bearer(first)  # both apps share the signing keys: the token is valid on either
    assert first.test_client().get("/fhir/Organization", headers=auth).status_code == 200
    assert second.test_client().get("/fhir/Organization", headers=auth).status_code == 200
    _refused(first.test_client().get("/fhir/Organization", headers=auth))
    _refused(second.test_client().get("/fhir/Organization", headers=auth))


def test_rate_limit_per_process_buckets_without_redis(build_app):
    # The documented default: each worker process keeps its own buckets.
    first, second = build_app(ops={"rate_limit": SLOW}), build_app(ops={"rate_limit": SLOW})
    auth = bearer(first)
    for _ in range(2):
        assert first.test_client().get("/fhir/Organization", headers=auth).status_code == 200
    _refused(first.test_client().get("/fhir/Organization", headers=auth))
    assert second.test_client().get("/fhir/Organization", headers=auth).status_code == 200


def test_rate_limit_lets_requests_through_when_redis_is_down(build_app):
    with RedisServer() as server:
        app = build_app(ops={"rate_limit": {**SLOW, "store": server.url}})
    client, auth = app.test_client(), bearer(app)  # the Redis server has stopped
    assert [client.get("/fhir/Organization", headers=auth).status_code for _ in range(4)] == [200] * 4


def test_gateway_requests_draw_from_the_clients_bucket(build_app, small_folders):
    """Image retrievals count against the same per-client bucket as the FHIR API (keyed by client_id)."""
    app = build_app(ops={"rate_limit": SLOW})
    client, portal = app.test_client(), bearer(app)
    other = bearer(app, client="imaging-timeline", scope="user/*.rs")
    study = sorted(p.name for p in small_folders["mft"].iterdir())[0]  # folders are named by study UID
    assert client.get("/fhir/Organization", headers=portal).status_code == 200
    assert client.get(f"/dicomweb/mft/studies/{study}/metadata", headers=portal).status_code == 200
    _refused(client.get(f"/dicomweb/mft/studies/{study}/metadata", headers=portal))
    assert client.get(f"/dicomweb/mft/studies/{study}/metadata", headers=other).status_code == 200  # its own bucket


# -- S23: a public app's users do not share one bucket -------------------------------------------------
def _user_token(app: Any, username: str, patient: str | None = None, scope: str = "user/*.rs") -> dict[str, str]:
    """A token of the public sample app (imaging-timeline) for one signed-in user."""
    from app.auth.server.grants import Grantee
    from app.web.components import components

    server = components(app).auth_server
    assert server is not None
    user = Grantee(username, f"Practitioner/{username}", patient)
    token = server.issuer("authorization_code", server.clients["imaging-timeline"], user, scope)["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_rate_limit_keys_a_public_clients_users_apart(build_app):
    """The key was the client id alone: one user of the public sample app could use up every other user's
    requests. A public client's calls are keyed by client and user."""
    app = build_app(ops={"rate_limit": SLOW})
    client = app.test_client()
    khan, jones = _user_token(app, "dr.khan"), _user_token(app, "radiographer.jones")
    assert [client.get("/fhir/Organization", headers=khan).status_code for _ in range(2)] == [200, 200]
    _refused(client.get("/fhir/Organization", headers=khan))
    assert client.get("/fhir/Organization", headers=jones).status_code == 200  # another user: another bucket
    again = _user_token(app, "dr.khan")  # a new token of the same user is still that user's bucket
    _refused(client.get("/fhir/Organization", headers=again))


def test_rate_limit_keys_a_public_client_without_user_by_address(build_app):
    app = build_app(ops={"rate_limit": SLOW})
    client = app.test_client()
    timeline = bearer(app, client="imaging-timeline", scope="user/*.rs")  # a token naming no user
    one, two = {"REMOTE_ADDR": "192.0.2.31"}, {"REMOTE_ADDR": "192.0.2.32"}
    for _ in range(2):
        assert client.get("/fhir/Organization", headers=timeline, environ_base=one).status_code == 200
    _refused(client.get("/fhir/Organization", headers=timeline, environ_base=one))
    assert client.get("/fhir/Organization", headers=timeline, environ_base=two).status_code == 200


def test_rate_key_rule() -> None:
    from app.auth.tokens import AccessClaims
    from app.ops import rate_key

    public = frozenset({"imaging-timeline"})
    portal = AccessClaims("portal", "portal", "system/*.rs")
    assert rate_key(portal, "192.0.2.1", public) == "client:portal"  # confidential: the client
    user = AccessClaims("imaging-timeline", "dr.khan", "user/*.rs", fhir_user="Practitioner/dr-khan")
    assert rate_key(user, "192.0.2.1", public) == "client:imaging-timeline|user:Practitioner/dr-khan"
    bare = AccessClaims("imaging-timeline", "imaging-timeline", "user/*.rs")
    assert rate_key(bare, "192.0.2.1", public) == "client:imaging-timeline|address:192.0.2.1"
    # Under an external authorization server public clients are not known: a token naming a user is keyed so.
    assert rate_key(AccessClaims("app", "u-1", "user/*.rs"), "192.0.2.1", None) == "client:app|user:u-1"
    assert rate_key(AccessClaims("svc", "svc", "system/*.rs"), "192.0.2.1", None) == "client:svc"

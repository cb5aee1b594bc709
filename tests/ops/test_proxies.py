"""Behind load balancers (`ops.trusted_proxies`): the client's address is read from X-Forwarded-For that
many hops back, for the rate limit, the /metrics allow-list and the audit; without the setting the
header is ignored, since anyone can send it."""

from __future__ import annotations

import pytest

from tests.ops.support import bearer

pytestmark = pytest.mark.integration
BALANCER = {"REMOTE_ADDR": "127.0.0.1"}  # the load balancer, on loopback with the facade


def test_without_trusted_proxies_x_forwarded_for_is_ignored(build_app):
    client = build_app().test_client()
    assert client.get("/metrics", headers={"X-Forwarded-For": "10.9.9.9"}, environ_base=BALANCER).status_code == 200
    outside = {"REMOTE_ADDR": "10.9.9.9"}
    assert client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}, environ_base=outside).status_code == 403


def test_one_trusted_proxy_the_client_address_comes_from_it(build_app):
    client = build_app(ops={"trusted_proxies": 1}).test_client()
    assert client.get("/metrics", headers={"X-Forwarded-For": "10.9.9.9"}, environ_base=BALANCER).status_code == 403
    assert client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}, environ_base=BALANCER).status_code == 200
    # A client that writes its own X-Forwarded-For: the balancer appends the real address, and only that counts.
    spoofed = {"X-Forwarded-For": "127.0.0.1, 10.9.9.9"}
    assert client.get("/metrics", headers=spoofed, environ_base=BALANCER).status_code == 403


def test_rate_limit_by_forwarded_address(build_app):
    client = build_app(ops={"trusted_proxies": 1, "rate_limit": {"requests_per_minute": 1, "burst": 2}}).test_client()
    first = {"X-Forwarded-For": "192.0.2.10"}
    assert [client.get("/fhir/metadata", headers=first, environ_base=BALANCER).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    assert (
        client.get("/fhir/metadata", headers={"X-Forwarded-For": "192.0.2.11"}, environ_base=BALANCER).status_code
        == 200
    )  # another client behind the same balancer


def test_audit_records_the_forwarded_address(build_app):
    app = build_app(ops={"trusted_proxies": 1})
    client = app.test_client()
    assert (
        client.get(
            "/fhir/Organization", headers={**bearer(app), "X-Forwarded-For": "198.51.100.7"}, environ_base=BALANCER
        ).status_code
        == 200
    )
    events = client.get(
        "/fhir/AuditEvent?_sort=-date&_count=5", headers=bearer(app, "system/AuditEvent.rs")
    ).get_json()["entry"]
    addresses = [a.get("network", {}).get("address") for e in events for a in e["resource"]["agent"]]
    assert "198.51.100.7" in addresses

"""/metrics: Prometheus exposition, not behind SMART, closed to addresses outside ops.metrics_allow.

Metric values live in the process (several apps share them): each test reads the exposition
before and after what it does and compares.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.web.components import components
from tests.infra.faultproxy import FaultProxy
from tests.ops.support import NHS, Samples, bearer, dicomweb, sample, scrape

pytestmark = pytest.mark.integration


def _metrics(app: Any) -> Samples:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return scrape(response.get_data(as_text=True))


def _search(app: Any, nhs_number: str) -> Any:
    response = app.test_client().get(
        "/fhir/ImagingStudy", headers=bearer(app), query_string={"patient.identifier": f"{NHS}|{nhs_number}"}
    )
    assert response.status_code == 200
    return response.get_json()


def test_metrics_open_to_loopback_by_default(build_app):
    client = build_app().test_client()
    assert client.get("/metrics").status_code == 200  # the test client's address is 127.0.0.1
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_refused_to_other_addresses_with_operation_outcome(build_app):
    response = build_app().test_client().get("/metrics", environ_base={"REMOTE_ADDR": "10.20.30.40"})
    assert response.status_code == 403
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "forbidden"
    assert b"facade_" not in response.data


@pytest.mark.parametrize(
    ("allow", "address", "status"),
    [
        (["10.0.0.0/8"], "10.20.30.40", 200),
        (["10.0.0.0/8"], "127.0.0.1", 403),
        (["192.0.2.7"], "192.0.2.7", 200),
        (["192.0.2.7"], "192.0.2.8", 403),
        (["2001:db8::/32"], "2001:db8::1", 200),
        (["127.0.0.0/8"], "::ffff:127.0.0.1", 200),
        ([], "127.0.0.1", 403),
    ],
)
def test_metrics_allow_list(build_app, allow, address, status):
    app = build_app(ops={"metrics_allow": allow})
    assert app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": address}).status_code == status


def test_metrics_do_not_need_a_token(build_app):
    response = build_app().test_client().get("/metrics", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 200


def test_metrics_count_requests_by_url_rule_not_raw_path(build_app, bolton_patient):
    app = build_app()
    nhs = bolton_patient["nhs_number"]
    before = _metrics(app)
    client = app.test_client()
    assert client.get(f"/fhir/Patient/{nhs}", headers=bearer(app)).status_code == 200
    assert client.get("/fhir/Patient/9434765919", headers=bearer(app)).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    after = _metrics(app)
    route = "/fhir/Patient/<patient_id>"
    for status in ("200", "404"):
        labels = {"method": "GET", "route": route, "status": status}
        assert (
            sample(after, "facade_http_requests_total", **labels)
            == sample(before, "facade_http_requests_total", **labels) + 1
        )
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert (
        sample(after, "facade_http_requests_total", **unmatched)
        == sample(before, "facade_http_requests_total", **unmatched) + 1
    )
    latency = {"method": "GET", "route": route}
    assert (
        sample(after, "facade_http_request_duration_seconds_count", **latency)
        == sample(before, "facade_http_request_duration_seconds_count", **latency) + 2
    )
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert nhs not in text and "9434765919" not in text


def test_metrics_archive_latency_and_errors_per_archive(build_app, proxy: FaultProxy, bolton_patient):
    app = build_app(bolton=dicomweb(proxy))
    nhs = bolton_patient["nhs_number"]
    before = _metrics(app)
    _search(app, nhs)
    proxy.set_fault("reset")
    bundle = _search(app, nhs)
    assert any(
        "bolton" in i["diagnostics"]
        for e in bundle["entry"]
        if e["search"]["mode"] == "outcome"
        for i in e["resource"]["issue"]
    )
    # The answer may leave as soon as one of Bolton's two requests fails: wait for the other one.
    for trust in components(app).services.federation.trusts:
        trust.pool.shutdown(wait=True)
    after = _metrics(app)
    for operation in ("find_studies", "find_series"):
        labels = {"archive": "bolton", "operation": operation}
        assert (
            sample(after, "facade_archive_request_duration_seconds_count", **labels)
            == sample(before, "facade_archive_request_duration_seconds_count", **labels) + 2
        )
    errors = sum(
        sample(after, "facade_archive_errors_total", archive="bolton", operation=op, kind="error")
        - sample(before, "facade_archive_errors_total", archive="bolton", operation=op, kind="error")
        for op in ("find_studies", "find_series")
    )
    assert errors == 2  # the reset search: its studies and its series request
    mft = {"archive": "mft", "operation": "find_studies"}
    assert (
        sample(after, "facade_archive_request_duration_seconds_count", **mft)
        == sample(before, "facade_archive_request_duration_seconds_count", **mft) + 2
    )
    assert sample(
        after, "facade_archive_errors_total", archive="mft", operation="find_studies", kind="error"
    ) == sample(before, "facade_archive_errors_total", archive="mft", operation="find_studies", kind="error")


def test_metrics_archive_retry_later_counted_and_circuit_open(build_app, proxy: FaultProxy, bolton_patient):
    app = build_app(bolton=dicomweb(proxy))
    before = _metrics(app)
    assert sample(before, "facade_archive_circuit_state", archive="bolton") == 0  # closed
    proxy.set_fault("status", code=503, headers={"Retry-After": "600"}, times=1, only="/studies")
    _search(app, bolton_patient["nhs_number"])
    after = _metrics(app)
    labels = {"archive": "bolton", "operation": "find_studies", "kind": "retry_later"}
    assert (
        sample(after, "facade_archive_errors_total", **labels)
        == sample(before, "facade_archive_errors_total", **labels) + 1
    )
    assert sample(after, "facade_archive_circuit_state", archive="bolton") == 2  # open
    assert sample(after, "facade_archive_circuit_state", archive="mft") == 0


def test_metrics_cache_hits_and_misses(build_app, proxy: FaultProxy, bolton_patient):
    app = build_app(bolton=dicomweb(proxy), federation={"cache_ttl_s": 300})
    before = _metrics(app)
    first = _search(app, bolton_patient["nhs_number"])
    upstream = len(proxy.requests)
    second = _search(app, bolton_patient["nhs_number"])
    assert len(proxy.requests) == upstream  # the second search was answered from the cache
    assert [e["resource"]["id"] for e in first["entry"]] == [e["resource"]["id"] for e in second["entry"]]
    after = _metrics(app)
    for archive in ("bolton", "mft"):
        assert (
            sample(after, "facade_archive_cache_misses_total", archive=archive)
            == sample(before, "facade_archive_cache_misses_total", archive=archive) + 2
        )  # studies, series
        assert (
            sample(after, "facade_archive_cache_hits_total", archive=archive)
            == sample(before, "facade_archive_cache_hits_total", archive=archive) + 2
        )
    calls = {"archive": "bolton", "operation": "find_studies"}
    assert (
        sample(after, "facade_archive_request_duration_seconds_count", **calls)
        == sample(before, "facade_archive_request_duration_seconds_count", **calls) + 1
    )  # hits are not upstream calls

"""Security headers (S10, S19): every response of the app, API and HTML, errors included, says nosniff and
no-referrer and may not be framed; everything but the public documents says no-store (and Pragma: no-cache).

Each case is a real request to the real app; the gateway, the authorization server's sign-in page and its
JSON, the sample app, the operations endpoints and werkzeug's own errors are covered as well as the FHIR API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from smart_tokens import patient_token, system_token

ALWAYS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
PRIVATE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@pytest.fixture(scope="module")
def http(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(scope="module")
def system(app: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {system_token(app)}"}


@pytest.fixture(scope="module")
def multi(manifest: dict[str, Any]) -> dict[str, Any]:
    nhs = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    return next(p for p in manifest["patients"] if p["nhs_number"] == nhs)


def assert_secure(response: Any, private: bool = True, framing: str = "'none'") -> None:
    """`framing`: who may frame the page; 'self' for the pages the demo's EHR launch simulator frames (the
    sample apps and the sign-in pages), never a third party; X-Frame-Options: DENY with 'none' only."""
    for name, value in ALWAYS.items():
        if name != "X-Frame-Options" or framing == "'none'":
            assert response.headers.get(name) == value, (name, dict(response.headers))
    policy = response.headers.get("Content-Security-Policy", "")
    assert f"frame-ancestors {framing};" in f"{policy};", policy
    if private:
        for name, value in PRIVATE.items():
            assert response.headers.get(name) == value, (name, dict(response.headers))


def login_page_query(app: Any) -> str:
    from app.web.components import components

    settings = components(app).settings
    return urlencode(
        {
            "response_type": "code",
            "client_id": "imaging-timeline",
            "redirect_uri": f"{settings.public_root}/apps/imaging-timeline/",
            "scope": "launch/patient patient/*.rs openid fhirUser",
            "state": "s-1",
            "aud": settings.base_url,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
    )


def test_fhir_responses_with_patient_data_are_not_stored(
    app: Any, http: Any, system: dict[str, str], multi: dict[str, Any]
) -> None:
    """S10: the FHIR API had no Cache-Control, Pragma or nosniff on patient data."""
    nhs = multi["nhs_number"]
    study = multi["studies"][0]["study_uid"]
    for path in (
        f"/fhir/ImagingStudy?patient={nhs}",
        f"/fhir/ImagingStudy/{study}",
        f"/fhir/Patient/{nhs}",
        f"/fhir/Patient?_id={nhs}&_summary=count",
        "/fhir/Endpoint",
        "/fhir/AuditEvent?_count=1",
    ):
        response = http.get(path, headers=system)
        assert response.status_code == 200, path
        assert_secure(response)
    searched = http.post("/fhir/ImagingStudy/_search", data={"patient": nhs}, headers=system)
    assert searched.status_code == 200
    assert_secure(searched)
    own = http.get(f"/fhir/Patient/{nhs}", headers={"Authorization": f"Bearer {patient_token(app, nhs)}"})
    assert own.status_code == 200
    assert_secure(own)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/fhir/ImagingStudy?patient=9434765919", 401),  # no token
        ("GET", "/fhir/ImagingStudy/2.25.1", 404),
        ("GET", "/fhir/ImagingStudy?modality=CT", 400),
        ("GET", "/fhir/Nothing", 404),  # werkzeug's routing error, through the one error path
        ("DELETE", "/fhir/Patient/9434765919", 405),  # werkzeug's 405
        ("GET", "/fhir/Patient?_id=9434765919&_format=xml", 406),
        ("GET", "/dicomweb/bolton/studies/2.25.1/metadata", 404),
        ("GET", "/nowhere", 404),
    ],
)
def test_error_responses_carry_the_headers_too(
    http: Any, system: dict[str, str], method: str, path: str, status: int
) -> None:
    headers = {} if status == 401 else system
    response = http.open(path, method=method, headers=headers)
    assert response.status_code == status
    assert_secure(response)


def test_unhandled_errors_carry_the_headers(app: Any, system: dict[str, str], monkeypatch: Any) -> None:
    """A 500 from an unexpected exception leaves through the same after-request hooks."""
    from app.web.components import components

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(components(app).services.patients, "read", broken)
    response = app.test_client().get("/fhir/Patient/9434765919", headers=system)
    assert response.status_code == 500
    assert_secure(response)


def test_gateway_images_are_not_stored_or_framed(http: Any, system: dict[str, str], multi: dict[str, Any]) -> None:
    study = next(s for s in multi["studies"] if len(s["trusts"]) == 1)
    base = f"/dicomweb/{study['trusts'][0]}/studies/{study['study_uid']}"
    for suffix in ("", "/metadata", "/rendered"):
        response = http.get(base + suffix, headers=system)
        assert response.status_code == 200
        assert_secure(response)


def test_sign_in_page_and_authorization_server_answers(app: Any, http: Any) -> None:
    """S19: the sign-in page lacked nosniff and Referrer-Policy; the token endpoint's errors are covered too."""
    page = http.get(f"/auth/authorize?{login_page_query(app)}")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert_secure(page, framing="'self'")  # demo: true (the test configuration): /apps/launcher/ frames it
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]  # the server's own policy is kept
    for response in (
        http.post("/auth/token", data={"grant_type": "password"}),
        http.post("/auth/introspect", data={"token": "x"}),
    ):
        assert response.status_code >= 400
        assert_secure(response)
    error_page = http.get("/auth/authorize?client_id=nobody")  # the error page (no redirect): a sign-in page too
    assert error_page.status_code == 400
    assert_secure(error_page, framing="'self'")


def test_sample_app_has_frame_ancestors(http: Any) -> None:
    """S19: the sample app had a policy without frame-ancestors."""
    page = http.get("/apps/imaging-timeline/")
    assert page.status_code == 200
    assert_secure(page, private=False, framing="'self'")  # demo: true: the EHR launch simulator frames it
    assert page.headers["Cache-Control"] == "no-cache"  # a static file: revalidated, never with patient data


def test_public_documents_may_be_cached(http: Any) -> None:
    """Discovery, the CapabilityStatement, the OpenAPI document and the JWKS carry no patient data."""
    for path in ("/fhir/metadata", "/fhir/.well-known/smart-configuration", "/fhir/openapi.json", "/auth/jwks"):
        response = http.get(path)
        assert response.status_code == 200, path
        assert_secure(response, private=False)
        assert "no-store" not in response.headers.get("Cache-Control", ""), path
    assert http.get("/auth/jwks").headers["Cache-Control"] == "public, max-age=300"


def test_operations_endpoints(http: Any) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        response = http.get(path)
        assert response.status_code == 200, path
        assert_secure(response)


def test_sample_apps_may_be_framed_by_the_configured_origins_only(settings: Any) -> None:
    """S19: pages meant to be framed (the sample apps, inside an EPR) carry the configured allow-list of
    `apps.frame_ancestors`; every other page stays `frame-ancestors 'none'` with X-Frame-Options: DENY."""
    import dataclasses

    from app import create_app

    epr = "https://epr.example.nhs.uk"
    framed = create_app(dataclasses.replace(settings, apps_frame_ancestors=(epr,))).test_client()
    page = framed.get("/apps/imaging-timeline/")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    # The demo's own origin (its EHR launch simulator) and the configured EPR, no one else.
    assert f"frame-ancestors 'self' {epr}" in policy and "frame-ancestors 'none'" not in policy, policy
    assert "X-Frame-Options" not in page.headers  # it cannot name an allow-list; the policy does
    for path in ("/apps/imaging-timeline/", "/auth/authorize?client_id=nobody"):
        production = create_app(dataclasses.replace(settings, demo=False, apps_frame_ancestors=(epr,))).test_client()
        policy = production.get(path).headers["Content-Security-Policy"]
        assert "'self'" not in policy.split("frame-ancestors", 1)[1], (
            path,
            policy,
        )  # outside the demo: not even 'self'
    production = create_app(dataclasses.replace(settings, demo=False)).test_client()
    for path in ("/auth/authorize?client_id=nobody", "/auth/logout"):
        sign_in = production.get(path).headers  # the sign-in, picker, consent and sign-out pages
        assert "frame-ancestors 'none'" in sign_in["Content-Security-Policy"], path
        assert sign_in["X-Frame-Options"] == "DENY", path
    for path in ("/fhir/metadata", "/auth/jwks", "/fhir/Patient"):
        other = framed.get(path)
        assert "frame-ancestors 'none'" in other.headers["Content-Security-Policy"], path
        assert other.headers["X-Frame-Options"] == "DENY", path

"""Target R4: the app fuzzed against its own OpenAPI document with schemathesis.

The real app of the `app` fixture (demo configuration, embedded SMART server, the demo data in
folder archives) is called in-process through WSGI, with a system token of the demo's backend
client (refreshed well before it expires) on every operation that declares the bearer scheme.
Schemathesis sends the document's examples (real demo data: they reach the 200 paths), its
coverage cases (boundary and invalid values of every parameter, unexpected methods) and a few
random valid and invalid requests per operation, and every response must:

- never be a 5xx (the demo's archives are healthy, so not even the gateway's 502-504);
- have a status, content type, headers and body that the document declares for the operation;
- on every 4xx of the FHIR API and the gateway, carry a FHIR OperationOutcome (application/fhir+json);
  on every 4xx of /auth, an OAuth 2.0 JSON error, or an HTML page for the browser pages of authorize;
- on an operation that needs a token, refuse the same request without one, or with a wrong one (401);
- refuse with a 4xx a request that breaks the document (type, pattern, enum, missing required part);
- answer an undocumented method with 405 and an `Allow` header naming exactly the documented methods.

The seed is fixed so that CI is reproducible; FUZZ_SEED and FUZZ_MAX_EXAMPLES explore further.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from smart_tokens import system_token

from app.web.fhir.openapi import stored_document

SEED = int(os.environ.get("FUZZ_SEED", "7"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))
TOKEN_REUSE_S = 120  # the demo's backend tokens live 300 s
FHIR_JSON = "application/fhir+json"

load_all_checks()
from schemathesis.checks import not_a_server_error  # noqa: E402  (registered by load_all_checks)


def _bearer_operation(case: Case) -> bool:
    return any("bearerToken" in requirement for requirement in case.operation.definition.raw.get("security", ()))


class SystemToken:
    """The demo portal's token (system/*.rs), minted by the app's own authorization server, renewed in time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.value, self.minted = system_token(app), time.monotonic()

    def header(self) -> dict[str, str]:
        if time.monotonic() - self.minted > TOKEN_REUSE_S:
            self.value, self.minted = system_token(self.app), time.monotonic()
        return {"Authorization": f"Bearer {self.value}"}


# The document as written (app/web/openapi.yaml). Served for this configuration (the demo's), it differs
# only in its server URL and OAuth URLs (test_openapi.py and test_the_served_document_has_these_paths).
# It is loaded at collection time: schemathesis's fixture-based loader does not work with pytest 9.
schema = schemathesis.openapi.from_dict(
    stored_document(),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": "http://127.0.0.1:8080",  # the demo's origin; requests go to the app in-process (WSGI)
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)


@pytest.fixture(scope="module")
def token(app) -> SystemToken:
    return SystemToken(app)


def test_the_served_document_has_these_paths(app) -> None:
    served = app.test_client().get("/fhir/openapi.json").get_json()
    assert served["paths"] == stored_document()["paths"]


def error_bodies(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx says what is wrong in the API's own error format."""
    if not 400 <= response.status_code < 500 or case.method.upper() == "HEAD":
        return None
    media = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    path = case.operation.path
    if path.startswith("/auth/"):
        if path == "/auth/authorize" and media == "text/html":
            return None  # the browser pages: unknown client or redirect URI (400), failed login (401)
        assert media == "application/json", f"{response.status_code} from {path} is {media!r}, not an OAuth error"
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), f"not an OAuth error: {body!r}"
        return True
    assert media == FHIR_JSON, f"{response.status_code} from {path} is {media!r}, not an OperationOutcome"
    body = response.json()
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", (
        f"not an OperationOutcome: {body!r}"
    )
    assert body.get("issue") and all(i.get("severity") and i.get("code") for i in body["issue"])
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
    unsupported_method,
    allow_header_conformance,
    negative_data_rejection,
]


@schema.parametrize()
def test_the_app_conforms_to_its_openapi_document_under_fuzzing(case: Case, app, token: SystemToken) -> None:
    # The token goes where the document asks for one; ignored_auth then checks that the same request
    # without it (and with a wrong one) is refused.
    headers = token.header() if _bearer_operation(case) else None
    # The schema was loaded before the session's app existed: requests (probes included) go to it in-process.
    case.operation.schema.app = app
    case.call_and_validate(headers=headers, checks=CHECKS, additional_checks=[error_bodies], app=app)

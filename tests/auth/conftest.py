"""Fixtures of the SMART-on-FHIR suite: real keys, real servers, one protected app.

* `keys`: the trusted issuer's signing keys, RS256, RS384 (RSA 2048) and ES256 (P-256), ES384 (P-384).
* `jwks_server`: a threaded HTTP server on loopback publishing their public halves with
  `Cache-Control: public, max-age=300`, counting fetches, able to publish/retire keys (rotation).
* `foreign_keys` / `foreign_jwks_server`: a second, untrusted issuer with its own keys.
* `introspection`: the external IdP's RFC 7662 endpoint (real HTTP, Basic client auth), answering
  `active: true` for tokens it issued and `active: false` for anything else or revoked ones.
* `mint(scope, alg=..., key=..., header=..., **claims)`: signs an access token with joserfc.
* `smart_app`: create_app() over config/demo.yaml and a session snapshot of the generated demo data
  (smart_support.DEMO_DATA: the shared folder may be regenerated mid-run) with `auth: external`
  (the JWT issuer and the introspection issuer), the audit file in tmp, CORS for the GM portal.
* `api`: the Flask test client sending `Authorization: Bearer`, refusing 5xx and validating every FHIR
  JSON body with tests/fhir_validation.validate_resource.
* `jwks_clock`: the monotonic clock of app.auth.tokens, advanced by tests (cache ages, refresh limits)
  instead of sleeping. It only moves forward, once installed, for the whole session.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from smart_support import (
    BASE_PATH,
    BASE_URL,
    CURSOR_SECRET,
    DEMO_CONFIG,
    DEMO_DATA,
    FHIR_JSON,
    FOREIGN_ISSUER,
    INTROSPECTION_CLIENT_ID,
    INTROSPECTION_SECRET,
    ISSUER,
    OPAQUE_ISSUER,
    PORTAL_ORIGIN,
    IntrospectionServer,
    JwksServer,
    SigningKey,
    generate_key,
    make_minter,
)

try:  # tests/ is on sys.path in pytest's default "prepend" import mode (no __init__.py)
    from fhir_validation import validate_resource
except ImportError:  # pragma: no cover
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]

import app.auth.tokens as tokens_module
from app import create_app
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, Settings, settings_from_document

# ----------------------------------------------------------------------------- keys and servers


@pytest.fixture(scope="session")
def keys() -> dict[str, SigningKey]:
    return {alg: generate_key(alg, f"gm-{alg.lower()}-2025") for alg in ("RS256", "RS384", "ES256", "ES384")}


@pytest.fixture(scope="session")
def foreign_keys() -> dict[str, SigningKey]:
    return {alg: generate_key(alg, f"rogue-{alg.lower()}") for alg in ("RS384", "ES384")}


@pytest.fixture(scope="session")
def jwks_server(keys: dict[str, SigningKey]) -> Iterator[JwksServer]:
    server = JwksServer(keys.values())
    yield server
    server.close()


@pytest.fixture(scope="session")
def foreign_jwks_server(foreign_keys: dict[str, SigningKey]) -> Iterator[JwksServer]:
    server = JwksServer(foreign_keys.values())
    yield server
    server.close()


@pytest.fixture(scope="session")
def introspection() -> Iterator[IntrospectionServer]:
    server = IntrospectionServer(INTROSPECTION_CLIENT_ID, INTROSPECTION_SECRET)
    yield server
    server.close()


@pytest.fixture(scope="session")
def mint(keys: dict[str, SigningKey]):
    return make_minter(keys)


@pytest.fixture(scope="session")
def foreign_mint(foreign_keys: dict[str, SigningKey]):
    minter = make_minter(foreign_keys)

    def mint(scope: str | None = "system/*.rs", **kwargs: Any) -> str:
        kwargs.setdefault("iss", FOREIGN_ISSUER)
        return minter(scope, **kwargs)

    return mint


class ShiftedClock:
    """Stands in for the `time` module inside app.auth.tokens: monotonic() can be moved forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        assert seconds > 0
        self.offset += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture(scope="session")
def jwks_clock() -> Iterator[ShiftedClock]:
    clock = ShiftedClock()
    patch = pytest.MonkeyPatch()
    patch.setattr(tokens_module, "time", clock)
    yield clock
    patch.undo()


# ----------------------------------------------------------------------------- the app


@pytest.fixture(scope="session")
def audit_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.sqlite"


@pytest.fixture(scope="session")
def smart_configuration(jwks_server: JwksServer, introspection: IntrospectionServer) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "jwks_uri": jwks_server.url,
        "authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth",
        "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
        "introspection_endpoint": introspection.url,
        "revocation_endpoint": f"{ISSUER}/protocol/openid-connect/revoke",
        "capabilities": [
            "launch-ehr",
            "launch-standalone",
            "client-confidential-asymmetric",
            "context-ehr-patient",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
        ],
        "scopes_supported": [
            "openid",
            "fhirUser",
            "launch",
            "launch/patient",
            "patient/*.rs",
            "user/*.rs",
            "system/*.rs",
        ],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
    }


@pytest.fixture(scope="session")
def smart_document(
    jwks_server: JwksServer, introspection: IntrospectionServer, audit_path: Path, smart_configuration: dict[str, Any]
) -> dict[str, Any]:
    """config/demo.yaml pointed at the generated demo data, protected by two external issuers."""
    doc = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    doc["patient_xref"] = str(DEMO_DATA / "xref.csv")
    for trust in doc["trusts"]:
        trust["archive"]["path"] = str(DEMO_DATA / trust["id"])
    doc["cursor_secret"] = CURSOR_SECRET
    doc["auth"] = {
        "mode": "external",
        "issuers": [
            {"issuer": ISSUER, "jwks_uri": jwks_server.url},
            {
                "issuer": OPAQUE_ISSUER,
                "introspection": {
                    "url": introspection.url,
                    "client_id": INTROSPECTION_CLIENT_ID,
                    "client_secret": INTROSPECTION_SECRET,
                },
            },
        ],
        "smart_configuration": smart_configuration,
        "cors_origins": [PORTAL_ORIGIN],
    }
    doc["audit"] = {"path": str(audit_path)}
    return doc


@pytest.fixture(scope="session")
def smart_settings(smart_document: dict[str, Any]) -> Settings:
    with pytest.MonkeyPatch.context() as env:  # the environment must not move the base URL (= token aud)
        env.delenv(BASE_URL_ENV, raising=False)
        env.delenv(CURSOR_SECRET_ENV, raising=False)
        settings = settings_from_document(copy.deepcopy(smart_document), DEMO_DATA, "tests/auth")
    assert settings.base_url == BASE_URL
    return settings


@pytest.fixture(scope="session")
def smart_app(smart_settings: Settings):
    return create_app(smart_settings)


class Api:
    """The Flask test client with a Bearer token; every FHIR JSON body is validated, 5xx refused."""

    def __init__(self, app: Any) -> None:
        self._client = app.test_client()

    def open(
        self,
        path: str,
        token: str | None = None,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        data: Any = None,
        authorization: str | None = None,
    ):
        sent = {"Accept": FHIR_JSON}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if authorization is not None:
            sent["Authorization"] = authorization
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v is not None}
        response = self._client.open(path, method=method, headers=sent, data=data)
        where = f"{method} {path}"
        detail = response.get_data(as_text=True)[:2000]
        assert response.status_code < 500, f"{where} -> {response.status_code}: {detail}"
        if method == "OPTIONS" or path.split("?")[0].endswith("/.well-known/smart-configuration"):
            return response
        assert response.mimetype == FHIR_JSON, f"{where} -> Content-Type {response.content_type!r}"
        body = response.get_json()
        assert isinstance(body, dict) and "resourceType" in body, f"{where} -> not a FHIR resource: {body!r:.300}"
        validate_resource(body)
        return response

    def get(self, path: str, token: str | None = None, **kwargs: Any):
        return self.open(path, token, method="GET", **kwargs)

    def post(self, path: str, token: str | None = None, **kwargs: Any):
        return self.open(path, token, method="POST", **kwargs)

    def options(self, path: str, **kwargs: Any):
        return self.open(path, None, method="OPTIONS", **kwargs)


@pytest.fixture(scope="session")
def api(smart_app: Any) -> Api:
    return Api(smart_app)


@pytest.fixture(scope="session")
def base_path() -> str:
    return BASE_PATH

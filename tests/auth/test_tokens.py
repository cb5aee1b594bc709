"""Hostile tokens against the resource server (SMART checklist items 23 and 25).

Every token is built for real: signed by joserfc with generated RSA/EC keys published by a real JWKS
server, forged by hand (alg none, HS256 keyed with the RSA public key), or opaque and answered by a
real RFC 7662 introspection server. Each hostile token carries the widest scope (`system/*.rs`), so
the only reason to refuse it is the defect under test. A refusal is 401 with
`WWW-Authenticate: Bearer realm="<base>", error="invalid_token"` (no `error` when no token was sent,
RFC 6750 3.1) and an OperationOutcome body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc.jwk import RSAKey
from smart_support import (
    ALGORITHMS,
    BASE_URL,
    FOREIGN_ISSUER,
    INTROSPECTION_CLIENT_ID,
    INTROSPECTION_SECRET,
    ISSUER,
    JWKS_MAX_AGE,
    PATIENT_A,
    STUDIES_A,
    JwksServer,
    SigningKey,
    b64url,
    default_claims,
    entries,
    generate_key,
    hs256_token,
    make_minter,
    parse_challenge,
    split_token,
    subject_of,
    unsigned_token,
)

from app.auth.tokens import CLOCK_SKEW_S, IntrospectionValidator, InvalidToken, JwksSource, JwtValidator

ROUTE = f"/fhir/ImagingStudy?patient={PATIENT_A}"


def assert_unauthorized(response: Any, *, error: bool = True) -> dict[str, str]:
    """401, a well-formed Bearer challenge for our realm, an OperationOutcome and no data."""
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True)[:500])
    scheme, params = parse_challenge(response.headers.get("WWW-Authenticate"))
    assert scheme == "Bearer"
    assert params.get("realm") == BASE_URL
    if error:
        assert params.get("error") == "invalid_token", params
    else:
        assert "error" not in params and "error_description" not in params, params
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(i["severity"] in ("error", "fatal") for i in body["issue"])
    assert PATIENT_A not in response.get_data(as_text=True)
    return params


def assert_ok(response: Any) -> None:
    assert response.status_code == 200, (
        response.status_code,
        response.headers.get("WWW-Authenticate"),
        response.get_data(as_text=True)[:500],
    )
    studies = entries(response.get_json())
    assert {s["id"] for s in studies} == STUDIES_A
    assert {subject_of(s) for s in studies} == {PATIENT_A}


# ----------------------------------------------------------------------------- no token, wrong header


def test_missing_token_is_401_without_error_code(api: Any) -> None:
    response = api.get(ROUTE)
    params = assert_unauthorized(response, error=False)
    assert set(params) == {"realm"}


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic Z20tcG9ydGFsOnNlY3JldA==",
        "Bearer",
        "Bearer ",
        "Bearer two tokens",
        "Token abc.def.ghi",
    ],
)
def test_authorization_header_not_bearer_is_401(api: Any, authorization: str) -> None:
    assert_unauthorized(api.get(ROUTE, authorization=authorization))


def test_token_in_query_or_form_is_not_accepted(api: Any, mint: Callable[..., str]) -> None:
    """RFC 6750 2.3 URI tokens end up in logs (and in the audit's query entity): not accepted here."""
    token = mint("system/ImagingStudy.rs")
    assert_unauthorized(api.get(f"{ROUTE}&access_token={token}"), error=False)
    assert_unauthorized(
        api.post("/fhir/ImagingStudy/_search", data={"patient": PATIENT_A, "access_token": token}), error=False
    )


# ----------------------------------------------------------------------------- the hostile table


class Forge:
    """Builds hostile tokens from the real keys and servers."""

    def __init__(
        self,
        mint: Callable[..., str],
        keys: dict[str, SigningKey],
        foreign_mint: Callable[..., str],
        foreign_keys: dict[str, SigningKey],
        foreign_jwks_server: JwksServer,
    ) -> None:
        self.mint = mint
        self.keys = keys
        self.foreign_mint = foreign_mint
        self.foreign_keys = foreign_keys
        self.foreign_jwks_server = foreign_jwks_server

    @property
    def payload(self) -> dict[str, Any]:
        return default_claims("system/*.rs")

    def header(self, **extra: Any) -> dict[str, Any]:
        return {"alg": "RS384", "kid": self.keys["RS384"].kid, "typ": "JWT", **extra}

    def good(self) -> str:
        return self.mint("system/*.rs")


now = lambda: int(time.time())  # noqa: E731

HOSTILE: dict[str, Callable[[Forge], str]] = {
    # malformed
    "one-part": lambda f: "not-a-jwt",
    "two-parts": lambda f: f"{b64url(f.header())}.{b64url(f.payload)}",
    "four-parts": lambda f: f.good() + ".extra",
    "header-bad-base64": lambda f: f"%%%.{b64url(f.payload)}.{f.good().split('.')[2]}",
    "header-bad-json": lambda f: f"{b64url('{not json')}.{b64url(f.payload)}.{f.good().split('.')[2]}",
    "payload-bad-base64": lambda f: f"{b64url(f.header())}.%%%.{f.good().split('.')[2]}",
    "payload-bad-json": lambda f: f"{b64url(f.header())}.{b64url('{not json')}.{f.good().split('.')[2]}",
    "payload-json-array": lambda f: f"{b64url(f.header())}.{b64url('[1, 2]')}.{f.good().split('.')[2]}",
    "signature-bad-base64": lambda f: ".".join(f.good().split(".")[:2]) + ".%%%",
    "signature-stripped": lambda f: ".".join(f.good().split(".")[:2]) + ".",
    # time
    "expired": lambda f: f.mint(exp=now() - 3600),
    "expired-beyond-leeway": lambda f: f.mint(exp=now() - CLOCK_SKEW_S - 30),
    "not-yet-valid-nbf": lambda f: f.mint(nbf=now() + 3600),
    "issued-in-the-future": lambda f: f.mint(iat=now() + 3600),
    "exp-missing": lambda f: f.mint(exp=None),
    "exp-not-a-number": lambda f: f.mint(exp="9999999999"),
    # audience and issuer
    "aud-other-server": lambda f: f.mint(aud="https://other-facade.example/fhir"),
    "aud-list-without-us": lambda f: f.mint(aud=["https://a.example/fhir", "https://b.example/fhir"]),
    "aud-missing": lambda f: f.mint(aud=None),
    "aud-prefix-of-ours": lambda f: f.mint(aud="http://127.0.0.1:8080"),
    "iss-missing": lambda f: f.mint(iss=None),
    "iss-foreign-own-key": lambda f: f.foreign_mint(),
    "iss-foreign-es384": lambda f: f.foreign_mint(alg="ES384"),
    "iss-ours-foreign-key-foreign-kid": lambda f: f.mint(key=f.foreign_keys["RS384"]),
    # algorithms
    "alg-none": lambda f: unsigned_token({"alg": "none", "typ": "JWT"}, f.payload),
    "alg-none-with-kid": lambda f: unsigned_token(f.header(alg="none"), f.payload),
    "alg-None-capitalised": lambda f: unsigned_token(f.header(alg="None"), f.payload),
    "alg-missing": lambda f: unsigned_token({"kid": f.keys["RS384"].kid}, f.payload, f.good().split(".")[2]),
    "hs256-rsa-public-pem-as-secret": lambda f: hs256_token(
        f.keys["RS384"].key.as_pem(private=False), f.header(alg="HS256"), f.payload
    ),
    "hs256-rsa-public-jwk-as-secret": lambda f: hs256_token(
        json.dumps(f.keys["RS384"].public_jwk()).encode(), f.header(alg="HS256"), f.payload
    ),
    "hs256-ec-public-pem-as-secret": lambda f: hs256_token(
        f.keys["ES384"].key.as_pem(private=False), {"alg": "HS256", "kid": f.keys["ES384"].kid}, f.payload
    ),
    "alg-es384-on-rsa-kid": lambda f: unsigned_token(f.header(alg="ES384"), f.payload, f.good().split(".")[2]),
    "alg-ps384-not-allowed": lambda f: f.mint(alg="PS384", key=_without_alg(f.keys["RS384"])),
    # keys and signatures
    "unknown-kid": lambda f: f.mint(header={"kid": "no-such-key"}),
    "kid-missing-foreign-key": lambda f: f.mint(key=f.foreign_keys["RS384"], header={"kid": None}),
    "bad-signature-other-key-same-kid": lambda f: f.mint(
        key=SigningKey("RS384", generate_key("RS384", f.keys["RS384"].kid).key)
    ),
    "bad-signature-es384-other-key-same-kid": lambda f: f.mint(
        alg="ES384", key=SigningKey("ES384", generate_key("ES384", f.keys["ES384"].kid).key)
    ),
    "tampered-payload-scope": lambda f: _tamper(
        f.mint("patient/ImagingStudy.rs", patient="9991750452"), scope="system/*.rs", patient=None
    ),
    "tampered-payload-exp": lambda f: _tamper(f.mint(exp=now() - 3600), exp=now() + 3600),
    "tampered-header-kid": lambda f: _retarget(f.mint(alg="RS256"), kid=f.keys["RS384"].kid),
    "jku-injection": lambda f: f.mint(key=f.foreign_keys["RS384"], header={"jku": f.foreign_jwks_server.url}),
    "embedded-jwk": lambda f: f.mint(
        key=f.foreign_keys["RS384"], header={"jwk": f.foreign_keys["RS384"].public_jwk(), "kid": None}
    ),
    # claims about the bearer
    "no-client-no-sub": lambda f: f.mint(client_id=None, sub=None),
    "scope-less": lambda f: f.mint(scope=None),
    # opaque
    "opaque-unknown": lambda f: "d6b1e0f3c2a94f7e8a5b0c1d2e3f4a5b",
}


def _without_alg(key: SigningKey) -> SigningKey:
    """The same RSA private key, not pinned to RS384 (so it can sign with another RSA algorithm)."""
    jwk = {k: v for k, v in key.key.as_dict(private=True).items() if k != "alg"}
    return SigningKey(key.alg, RSAKey.import_key(jwk))


def _tamper(token: str, **changes: Any) -> str:
    _header, payload, signature = split_token(token)
    payload.update(changes)
    payload = {k: v for k, v in payload.items() if v is not None}
    return f"{token.split('.')[0]}.{b64url(payload)}.{signature}"


def _retarget(token: str, **changes: Any) -> str:
    header, _payload, signature = split_token(token)
    header.update(changes)
    return f"{b64url(header)}.{token.split('.')[1]}.{signature}"


@pytest.fixture(scope="module")
def forge(
    mint: Callable[..., str],
    keys: dict[str, SigningKey],
    foreign_mint: Callable[..., str],
    foreign_keys: dict[str, SigningKey],
    foreign_jwks_server: JwksServer,
) -> Forge:
    return Forge(mint, keys, foreign_mint, foreign_keys, foreign_jwks_server)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_token_is_401_invalid_token(api: Any, forge: Forge, foreign_jwks_server: JwksServer, case: str) -> None:
    token = HOSTILE[case](forge)
    foreign_fetches = foreign_jwks_server.fetches
    assert_unauthorized(api.get(ROUTE, token))
    assert foreign_jwks_server.fetches == foreign_fetches, "the server fetched keys from a URL the token named"


def test_hostile_controls_are_accepted(api: Any, forge: Forge) -> None:
    """The forging helpers themselves produce acceptable tokens when nothing is wrong."""
    assert_ok(api.get(ROUTE, forge.good()))
    assert_ok(api.get(ROUTE, _tamper(forge.good())))  # re-encoding alone changes nothing
    assert_ok(api.get(ROUTE, forge.mint(aud=[BASE_URL, "https://other.example/fhir"])))


@pytest.mark.parametrize(
    "path",
    [
        f"/fhir/ImagingStudy?patient={PATIENT_A}",
        f"/fhir/ImagingStudy/{sorted(STUDIES_A)[0]}",
        f"/fhir/Patient?identifier={PATIENT_A}",
        f"/fhir/Patient/{PATIENT_A}",
        "/fhir/Endpoint",
        "/fhir/Endpoint/bolton-wado-rs",
        "/fhir/Organization",
        "/fhir/Organization/RMC",
        "/fhir/AuditEvent",
    ],
)
def test_expired_token_is_401_on_every_route(api: Any, mint: Callable[..., str], path: str) -> None:
    assert_unauthorized(api.get(path, mint("system/*.rs", exp=now() - 3600)))
    assert_unauthorized(api.get(path), error=False)
    assert api.get(path, mint("system/*.rs")).status_code == 200


def test_post_search_with_hostile_token_is_401(api: Any, mint: Callable[..., str]) -> None:
    response = api.post(
        "/fhir/ImagingStudy/_search", mint(aud="https://other.example/fhir"), data={"patient": PATIENT_A}
    )
    assert_unauthorized(response)


def test_challenge_error_description_is_quoted_safely(api: Any, forge: Forge) -> None:
    """Every challenge parses as RFC 7235 auth-params (a reason with a quote would break it)."""
    for case in ("exp-missing", "aud-missing", "exp-not-a-number", "aud-other-server", "payload-bad-json"):
        params = assert_unauthorized(api.get(ROUTE, HOSTILE[case](forge)))
        assert params.get("error_description"), case


# ----------------------------------------------------------------------------- valid tokens


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_valid_token_accepted_for_each_algorithm(api: Any, mint: Callable[..., str], alg: str) -> None:
    assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs", alg=alg)))


def test_valid_token_scheme_is_case_insensitive(api: Any, mint: Callable[..., str]) -> None:
    assert_ok(api.get(ROUTE, authorization=f"bearer {mint('system/ImagingStudy.rs')}"))


def test_valid_token_scope_as_list_and_scp(api: Any, mint: Callable[..., str]) -> None:
    assert_ok(api.get(ROUTE, mint(None, scp="system/ImagingStudy.rs")))
    assert_ok(api.get(ROUTE, mint(["system/ImagingStudy.rs"])))


# ----------------------------------------------------------------------------- clock skew


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"exp": -10}, True),
        ({"exp": -(CLOCK_SKEW_S - 5)}, True),
        ({"exp": -60}, False),
        ({"exp": -(CLOCK_SKEW_S + 5)}, False),
        ({"nbf": 10}, True),
        ({"nbf": 60}, False),
        ({"iat": 10}, True),
    ],
    ids=[
        "exp-10s-ago",
        "exp-within-leeway",
        "exp-60s-ago",
        "exp-just-beyond-leeway",
        "nbf-in-10s",
        "nbf-in-60s",
        "iat-in-10s",
    ],
)
def test_clock_skew_leeway_is_30s(api: Any, mint: Callable[..., str], claims: dict[str, int], accepted: bool) -> None:
    assert CLOCK_SKEW_S == 30
    token = mint("system/ImagingStudy.rs", **{k: now() + v for k, v in claims.items()})
    response = api.get(ROUTE, token)
    if accepted:
        assert_ok(response)
    else:
        assert_unauthorized(response)


# ----------------------------------------------------------------------------- introspection (opaque tokens)


def test_introspection_active_token_accepted(api: Any, introspection: Any) -> None:
    token = introspection.issue("system/ImagingStudy.rs", client_id="opaque-portal")
    calls = len(introspection.calls)
    assert_ok(api.get(ROUTE, token))
    call = introspection.calls[calls]
    assert call["authenticated"], "the facade did not authenticate to the introspection endpoint"
    assert call["form"]["token"] == token
    assert call["content_type"].startswith("application/x-www-form-urlencoded")


def test_introspection_revoked_token_is_401(api: Any, introspection: Any) -> None:
    token = introspection.issue("system/ImagingStudy.rs")
    assert_ok(api.get(ROUTE, token))
    introspection.revoke(token)
    assert_unauthorized(api.get(ROUTE, token))


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://other-facade.example/fhir"},
        {"aud": ["https://other-facade.example/fhir"]},
        {"aud": None},
        {"exp": int(time.time()) - 3600},
        {"active": "true"},
        {"active": 1},
        {"client_id": None, "sub": None},
        {"scope": None},
    ],
    ids=[
        "aud-other",
        "aud-list-other",
        "aud-missing",
        "expired",
        "active-string",
        "active-int",
        "no-client",
        "scope-less",
    ],
)
def test_introspection_unacceptable_answer_is_401(api: Any, introspection: Any, claims: dict[str, Any]) -> None:
    claims = dict(claims)
    token = introspection.issue(claims.pop("scope", "system/ImagingStudy.rs"), **claims)
    assert_unauthorized(api.get(ROUTE, token))


def test_introspection_patient_context_is_enforced(api: Any, introspection: Any) -> None:
    token = introspection.issue("patient/ImagingStudy.rs", patient=PATIENT_A)
    response = api.get("/fhir/ImagingStudy", token)
    assert response.status_code == 200
    assert {s["id"] for s in entries(response.get_json())} == STUDIES_A


# ----------------------------------------------------------------------------- JWKS caching and rotation


def test_jwks_many_requests_one_fetch(
    api: Any, mint: Callable[..., str], jwks_server: JwksServer, jwks_clock: Any
) -> None:
    jwks_clock.advance(JWKS_MAX_AGE + 1)  # whatever is cached is now stale
    before = jwks_server.fetches
    for _ in range(3):
        for alg in ALGORITHMS:
            assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs", alg=alg)))
    assert jwks_server.fetches - before == 1


def test_jwks_refetched_once_after_max_age(
    api: Any, mint: Callable[..., str], jwks_server: JwksServer, jwks_clock: Any
) -> None:
    jwks_clock.advance(JWKS_MAX_AGE + 1)
    assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs")))
    fetched = jwks_server.fetches
    jwks_clock.advance(JWKS_MAX_AGE - 30)  # still fresh
    for _ in range(3):
        assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs")))
    assert jwks_server.fetches == fetched
    jwks_clock.advance(31)  # now past max-age
    for _ in range(3):
        assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs", alg="ES256")))
    assert jwks_server.fetches == fetched + 1


def test_jwks_rotation_new_kid_triggers_exactly_one_refresh(
    api: Any, mint: Callable[..., str], jwks_server: JwksServer, jwks_clock: Any
) -> None:
    jwks_clock.advance(JWKS_MAX_AGE + 1)
    assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs")))  # fresh cache without the new key
    rotated = generate_key("RS384", "gm-rs384-2026")
    jwks_server.publish(rotated)
    try:
        jwks_clock.advance(15)  # the IdP rotates a little later (past the refresh rate limit)
        before = jwks_server.fetches
        for _ in range(4):
            assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs", key=rotated)))
        assert jwks_server.fetches - before == 1
        assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs")))  # the old key still works, no new fetch
        assert jwks_server.fetches - before == 1
    finally:
        jwks_server.retire(rotated.kid)


def test_jwks_unknown_kids_refresh_exactly_once(
    api: Any, mint: Callable[..., str], jwks_server: JwksServer, jwks_clock: Any
) -> None:
    """A burst of tokens with unknown kids cannot make the server hammer the IdP."""
    assert_ok(api.get(ROUTE, mint("system/ImagingStudy.rs")))
    jwks_clock.advance(15)
    before = jwks_server.fetches
    for n in range(6):
        assert_unauthorized(api.get(ROUTE, mint("system/ImagingStudy.rs", header={"kid": f"sprayed-{n}"})))
    assert jwks_server.fetches - before == 1


# ----------------------------------------------------------------------------- JwksSource / JwtValidator directly


@pytest.fixture
def private_jwks(keys: dict[str, SigningKey]):
    servers: list[JwksServer] = []

    def start(cache_control: str) -> JwksServer:
        server = JwksServer([keys["RS384"]], cache_control)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize(
    ("cache_control", "fetches"),
    [
        ("no-store", 3),
        ("no-cache", 3),
        ("max-age=0", 3),
        ("public, max-age=600", 1),
        ("", 1),  # no header: the default TTL (300 s) applies
    ],
)
def test_jwks_source_honours_cache_control(
    private_jwks: Any, keys: dict[str, SigningKey], cache_control: str, fetches: int
) -> None:
    server = private_jwks(cache_control)
    source = JwksSource(url=server.url)
    for _ in range(3):
        found = source.key_set(keys["RS384"].kid)
        assert [k.kid for k in found.keys] == [keys["RS384"].kid]
    assert server.fetches == fetches
    assert source.fetches == fetches


def test_jwks_source_unreachable_is_invalid_token() -> None:
    server = JwksServer([])
    url = server.url
    server.close()
    with pytest.raises(InvalidToken):
        JwksSource(url=url, timeout_s=2).key_set("any")


def test_jwt_validator_rejects_token_for_other_audience(private_jwks: Any, keys: dict[str, SigningKey]) -> None:
    server = private_jwks("max-age=60")
    validator = JwtValidator(ISSUER, BASE_URL, JwksSource(url=server.url))
    minter = make_minter(keys)
    claims = validator.validate(minter("system/ImagingStudy.rs", client_id="portal-x", fhirUser="Practitioner/7"))
    assert (claims.client_id, claims.scope, claims.fhir_user) == (
        "portal-x",
        "system/ImagingStudy.rs",
        "Practitioner/7",
    )
    with pytest.raises(InvalidToken):
        validator.validate(minter("system/ImagingStudy.rs", aud="https://other.example/fhir"))
    with pytest.raises(InvalidToken):
        validator.validate(minter("system/ImagingStudy.rs", iss=FOREIGN_ISSUER))


def test_introspection_validator_wrong_client_secret_is_invalid_token(introspection: Any) -> None:
    token = introspection.issue("system/ImagingStudy.rs")
    good = IntrospectionValidator(introspection.url, INTROSPECTION_CLIENT_ID, INTROSPECTION_SECRET, BASE_URL)
    assert good.validate(token).scope == "system/ImagingStudy.rs"
    wrong = IntrospectionValidator(introspection.url, INTROSPECTION_CLIENT_ID, "wrong-secret", BASE_URL)
    with pytest.raises(InvalidToken):
        wrong.validate(token)
    assert introspection.calls[-1]["authenticated"] is False


def test_introspection_validator_unreachable_is_invalid_token() -> None:
    server = JwksServer([])
    url = f"{server.origin}/introspect"
    server.close()
    with pytest.raises(InvalidToken):
        IntrospectionValidator(url, "c", "s", BASE_URL, timeout_s=2).validate("opaque")

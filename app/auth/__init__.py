"""SMART-on-FHIR: token validation, scopes (pure), resource protection, audit, discovery."""

from __future__ import annotations

from typing import Any

from app.auth.protect import Protector, TokenValidator
from app.auth.tokens import IntrospectionValidator, JwksSource, JwtValidator
from app.settings import Settings, config_secret


def build_protector(settings: Settings, embedded: Any = None) -> Protector:
    """The resource server's validators, from the `auth` settings."""
    auth = settings.auth
    if auth["mode"] == "none":
        return Protector(settings.base_url, {}, insecure=True)
    if auth["mode"] == "embedded":
        return Protector(settings.base_url, {settings.base_url: embedded.validator})
    validators: dict[str, TokenValidator] = {}
    opaque: TokenValidator | None = None
    for issuer in auth.get("issuers", ()):
        if "jwks_uri" in issuer:
            validators[issuer["issuer"]] = JwtValidator(
                issuer["issuer"], settings.base_url, JwksSource(url=issuer["jwks_uri"])
            )
        else:
            introspection: dict[str, Any] = issuer["introspection"]
            opaque = IntrospectionValidator(
                introspection["url"],
                introspection["client_id"],
                config_secret(introspection, "client_secret"),
                settings.base_url,
            )
    return Protector(settings.base_url, validators, opaque)


def smart_configuration(settings: Settings, embedded: Any = None) -> dict[str, Any] | None:
    """The document served at .well-known/smart-configuration (None: no authorization server)."""
    auth = settings.auth
    if auth["mode"] == "embedded":
        return embedded.smart_configuration()  # type: ignore[no-any-return]
    if auth["mode"] == "external":
        document = dict(auth["smart_configuration"])
        # The gateway accepts the same tokens as the FHIR API: SMART Imaging Access holds whatever the issuer.
        capabilities = list(document.get("capabilities", ()))
        document["capabilities"] = capabilities + (
            ["smart-imaging-access"] if "smart-imaging-access" not in capabilities else []
        )
        document.setdefault("code_challenge_methods_supported", ["S256"])
        document.setdefault("response_types_supported", ["code"])
        return document
    return None

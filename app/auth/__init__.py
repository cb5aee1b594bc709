"""SMART-on-FHIR: token validation, scopes (pure), resource protection, audit, discovery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.auth.protect import Protector, TokenValidator
from app.auth.tokens import IntrospectionValidator, JwksSource, JwtValidator
from app.settings import EmbeddedAuthSettings, ExternalAuthSettings, NoAuthSettings, Settings, config_secret

if TYPE_CHECKING:
    from app.auth.server import EmbeddedAuthServer


def build_protector(settings: Settings, embedded: EmbeddedAuthServer | None = None) -> Protector:
    """The resource server's validators, from the `auth` settings."""
    auth = settings.auth
    if isinstance(auth, NoAuthSettings):
        return Protector(settings.base_url, {}, insecure=True)
    if isinstance(auth, EmbeddedAuthSettings):
        assert embedded is not None, "auth.mode embedded: the embedded server validates its own tokens"
        return Protector(settings.base_url, {settings.base_url: embedded.validator})
    validators: dict[str, TokenValidator] = {}
    opaque: TokenValidator | None = None
    for issuer in auth.issuers:
        if "jwks_uri" in issuer:
            validators[issuer["issuer"]] = JwtValidator(
                issuer["issuer"], settings.base_url, JwksSource(url=issuer["jwks_uri"])
            )
        else:
            introspection: Mapping[str, Any] = issuer["introspection"]
            opaque = IntrospectionValidator(
                introspection["url"],
                introspection["client_id"],
                config_secret(introspection, "client_secret"),
                settings.base_url,
            )
    return Protector(settings.base_url, validators, opaque)


def smart_configuration(settings: Settings, embedded: EmbeddedAuthServer | None = None) -> dict[str, Any] | None:
    """The document served at .well-known/smart-configuration (None: no authorization server)."""
    auth = settings.auth
    if isinstance(auth, EmbeddedAuthSettings):
        assert embedded is not None, "auth.mode embedded: the embedded server publishes its own configuration"
        return embedded.smart_configuration()
    if isinstance(auth, ExternalAuthSettings):
        document = dict(auth.smart_configuration)
        # The gateway accepts the same tokens as the FHIR API: SMART Imaging Access holds whatever the issuer.
        capabilities = list(document.get("capabilities", ()))
        document["capabilities"] = capabilities + (
            ["smart-imaging-access"] if "smart-imaging-access" not in capabilities else []
        )
        document.setdefault("code_challenge_methods_supported", ["S256"])
        document.setdefault("response_types_supported", ["code"])
        return document
    return None

"""Access tokens for tests of the API itself, signed by the app's own embedded SMART server.

They are the tokens SMART Backend Services would give the demo portal client; the flows that
issue them are tested in tests/auth and tests/e2e.
"""

from __future__ import annotations

from typing import Any

from app.web.components import components

SYSTEM_SCOPE = "system/*.rs"


def system_token(app: Any, scope: str = SYSTEM_SCOPE) -> str:
    server = components(app).auth_server
    assert server is not None, "the app has no embedded SMART server"
    return str(server.issuer("client_credentials", server.clients["portal"], None, scope)["access_token"])


def patient_token(app: Any, nhs_number: str, scope: str = "launch/patient patient/*.rs") -> str:
    """A token of the sample app (imaging-timeline) for a clinician in one patient's context."""
    from app.auth.server.grants import Grantee

    server = components(app).auth_server
    assert server is not None, "the app has no embedded SMART server"
    user = Grantee("dr.khan", "Practitioner/dr-khan", nhs_number)
    return str(server.issuer("authorization_code", server.clients["imaging-timeline"], user, scope)["access_token"])

"""Access tokens for tests of the API itself, signed by the app's own embedded SMART server.

They are the tokens SMART Backend Services would give the demo portal client; the flows that
issue them are tested in tests/auth and tests/e2e.
"""

from __future__ import annotations

from typing import Any

SYSTEM_SCOPE = "system/*.rs"


def system_token(app: Any, scope: str = SYSTEM_SCOPE) -> str:
    server = app.extensions["smart_server"]
    return str(server.issuer("client_credentials", server.clients["portal"], None, scope)["access_token"])

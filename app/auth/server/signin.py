"""Sign-in to the embedded server: login sessions kept server-side, and a throttle on failed sign-ins.

Login sessions: the browser's cookie (Flask's signed session, app.auth.server.KeyFileSessions) holds a
random session id and the form's CSRF value, nothing else; who signed in, and when, is kept in the
auth-state store under the id's hash, shared by every process. A session ends when the user signs
out, after `session_idle_s` without a request, and `session_max_s` after sign-in whatever happens: a
copied cookie is worth nothing after that. `online_access` refresh tokens are bound to the session
(grants.RefreshTokenGrant) and using one counts as activity, within the absolute limit.

The throttle (OWASP's progressive delay, no lock-out): failed sign-ins are counted per user name and
per source address for `failure_window_s`; beyond the free allowance each further attempt must wait,
1 s doubling up to `max_wait_s`, and is answered 429 with Retry-After meanwhile, without the password
being checked. Unknown user names are counted like known ones (the answer does not tell them apart).
A browser where the user signed in before carries a device cookie: its attempts for that user are
counted on their own, so an attacker failing on purpose cannot keep a clinician out of their own
workstation (the device's counter slows guessing there just the same).
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from app.auth.server.store import AuthStore, secret_key
from app.settings import SignInSettings

DEVICE_COOKIE = "gm_signin_device"
DEVICE_TTL_S = 90 * 86400


class LoginSessions:
    """Server-side login sessions in the auth-state store (kind `session`, key: the id's hash)."""

    KIND = "session"

    def __init__(self, store: AuthStore, idle_s: int, max_s: int) -> None:
        self.store = store
        self.idle_s = idle_s
        self.max_s = max_s

    def _save(self, key: str, record: dict[str, Any], now: float) -> bool:
        left = record["ends_at"] - now
        if left <= 0:
            self.store.delete(self.KIND, key)
            return False
        self.store.put(self.KIND, key, record, min(self.idle_s, left))  # idle: the record's expiry
        return True

    def start(self, username: str, fresh_for: str | None = None) -> str:
        """A new session for `username` (its id, for the cookie). `fresh_for` names the authorization
        request (its PKCE challenge) this sign-in answered: prompt=login or max_age is then met for it."""
        now = time.time()
        sid = secrets.token_urlsafe(32)
        record = {"user": username, "auth_time": int(now), "ends_at": now + self.max_s, "fresh_for": fresh_for}
        self._save(secret_key(sid), record, now)
        return sid

    def load(self, sid: str | None) -> dict[str, Any] | None:
        """The session of this id, its idle time restarted; None when there is none (any more)."""
        return self.touch(secret_key(sid)) if sid else None

    def touch(self, key: str) -> dict[str, Any] | None:
        """By store key (what an online_access refresh token holds): the record if the session is on."""
        record = self.store.get(self.KIND, key)
        if record is None:
            return None
        return record if self._save(key, record, time.time()) else None

    def alive(self, key: str) -> bool:
        return self.touch(key) is not None

    def end(self, sid: str | None) -> dict[str, Any] | None:
        return self.store.take(self.KIND, secret_key(sid)) if sid else None


class SignInThrottle:
    """Failed sign-ins counted per account and per address (or per known device), in the shared store."""

    def __init__(self, store: AuthStore, settings: SignInSettings) -> None:
        self.store = store
        self.settings = settings

    def _counters(self, username: str, address: str | None, device: str | None) -> list[tuple[str, int]]:
        allowance = self.settings.failures_per_account
        if device is not None:  # the user's own browser: not held up by failures elsewhere
            return [(f"device:{secret_key(device)}", allowance)]
        return [
            (f"account:{secret_key(username)}", allowance),
            (f"address:{address or 'unknown'}", self.settings.failures_per_address),
        ]

    def wait_s(self, username: str, address: str | None, device: str | None) -> int:
        """Seconds to wait before this attempt may be checked (0: go ahead)."""
        now = time.time()
        waits = [
            float(held["until"]) - now
            for key, _ in self._counters(username, address, device)
            if (held := self.store.get("signin-wait", key)) is not None
        ]
        longest = max(waits, default=0.0)
        return math.ceil(longest) if longest > 0 else 0

    def failed(self, username: str, address: str | None, device: str | None) -> None:
        now = time.time()
        for key, allowance in self._counters(username, address, device):
            count = self.store.incr("signin-failures", key, self.settings.failure_window_s)
            if count > allowance:
                wait = min(2.0 ** min(count - allowance - 1, 30), float(self.settings.max_wait_s))
                self.store.put("signin-wait", key, {"until": now + wait}, wait)

    def succeeded(self, username: str, device: str | None) -> None:
        """The account's (and device's) failures are forgotten; the address's are not."""
        for key in (f"account:{secret_key(username)}",) + ((f"device:{secret_key(device)}",) if device else ()):
            self.store.delete("signin-failures", key)
            self.store.delete("signin-wait", key)

    # -- device cookies ----------------------------------------------------------------------
    def device_for(self, token: str | None, username: str) -> str | None:
        """The device cookie's value when it was issued to this user's sign-in, else None."""
        if not token:
            return None
        found = self.store.get("signin-device", secret_key(token))
        return token if found is not None and found.get("user") == username else None

    def new_device(self, username: str) -> str:
        token = secrets.token_urlsafe(24)
        self.store.put("signin-device", secret_key(token), {"user": username}, DEVICE_TTL_S)
        return token

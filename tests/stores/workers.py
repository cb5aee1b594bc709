"""What the concurrency tests run in processes of their own (spawned: nothing inherited but arguments)."""

from __future__ import annotations

from typing import Any


def race(spec: str, keys: list[str], barrier: Any, results: Any) -> None:
    """Open the store, wait for every racer, then, for each key, try to redeem the code and to see the jti
    first, and count one sign-in failure; report what it won and the counts it saw."""
    from app.auth.server.store import open_store

    store = open_store(spec)
    barrier.wait(timeout=300)
    codes, jtis, counts = [], [], []
    for key in keys:
        codes.append(store.take("code", key) is not None)
        jtis.append(store.add_once("assertion-jti", f"portal:{key}", 300))
        counts.append(store.incr("signin-failures", "u", 600))
    results.put((codes, jtis, counts))


def start_stores(url: str, barrier: Any, results: Any) -> None:
    """Start as a facade instance does, the connections made first so that the migrations themselves race:
    the audit trail's schema, then the authorization state's."""
    from app.audit.postgres import migrate, open_pool

    audit, state = open_pool(url, "audit.url", "audit"), open_pool(url, "auth.store", "auth-state")
    barrier.wait(timeout=300)
    try:
        migrate(audit, "audit", "app.audit", "audit.url")
        migrate(state, "auth", "app.auth.server", "auth.store")
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        audit.close()
        state.close()

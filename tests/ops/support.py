"""Helpers for the operations tests: tokens, archive settings, reading a Prometheus exposition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from app.web.components import components
from tests.infra.faultproxy import FaultProxy

try:  # pytest "prepend" import mode puts tests/ on sys.path
    from smart_tokens import system_token
except ImportError:  # pragma: no cover
    from tests.smart_tokens import system_token  # type: ignore[no-redef]

TRUSTS = ("bolton", "mft")  # both match PatientID = NHS number: no cross-reference needed
NHS = "https://fhir.nhs.uk/Id/nhs-number"
BuildApp = Callable[..., Flask]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def dicomweb(proxy: FaultProxy, **extra: Any) -> dict[str, Any]:
    return {"type": "dicomweb", "url": proxy.url, "timeout_s": 3, **extra}


def bearer(app: Flask, scope: str = "system/*.rs", client: str = "portal") -> dict[str, str]:
    if client == "portal":
        return {"Authorization": f"Bearer {system_token(app, scope)}"}
    server = components(app).auth_server
    assert server is not None, "the app has no embedded SMART server"
    token = server.issuer("client_credentials", server.clients[client], None, scope)["access_token"]
    return {"Authorization": f"Bearer {token}"}


def scrape(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)

"""Helpers for the federation tests: a checking FHIR client and readers of searchset Bundles."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from flask import Flask

try:  # pytest "prepend" import mode puts tests/ on sys.path (tests/conftest.py does the same)
    from fhir_validation import validate_resource
    from smart_tokens import system_token
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]
    from tests.smart_tokens import system_token  # type: ignore[no-redef]

from app.services import Services
from app.web.components import components
from tests.infra.faultproxy import FaultProxy
from tests.infra.orthanc import OrthancServer

FHIR_JSON = "application/fhir+json"
BASE_PATH = "/fhir"


@dataclass
class TrustServer:
    """One trust's real archive and the fault proxy in front of it."""

    trust_id: str
    name: str
    orthanc: OrthancServer
    proxy: FaultProxy

    @property
    def url(self) -> str:
        return self.proxy.url  # .../dicom-web

    def reset(self) -> None:
        self.proxy.set_fault("none")
        self.proxy.clear()


class FhirClient:
    """app.test_client() that checks every answer: never 5xx, FHIR JSON, a valid FHIR resource."""

    def __init__(self, app: Flask) -> None:
        self._client = app.test_client()
        self._auth = {"Authorization": f"Bearer {system_token(app)}"}

    def get(self, path: str, query: Iterable[tuple[str, str]] | dict[str, str] | None = None) -> Any:
        params = list(query.items()) if isinstance(query, dict) else list(query or ())
        response = self._client.get(BASE_PATH + path, query_string=params, headers=self._auth)
        where = f"GET {path} {params}"
        text = response.get_data(as_text=True)[:2000]
        assert response.status_code < 500, f"{where} -> {response.status_code}: {text}"
        assert response.mimetype == FHIR_JSON, f"{where} -> Content-Type {response.content_type!r}"
        body = response.get_json()
        assert isinstance(body, dict) and "resourceType" in body, f"{where} -> not a FHIR resource"
        validate_resource(body)
        return response


@dataclass
class Federated:
    """A facade app built over the trust proxies, with its client."""

    app: Flask
    client: FhirClient
    servers: dict[str, TrustServer]
    names: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> Services:
        return components(self.app).services

    def search(self, *pairs: tuple[str, str], status: int = 200, **params: str) -> dict[str, Any]:
        query = [*pairs, *params.items()]
        if not any(name == "_count" for name, _ in query):
            query.append(("_count", "200"))
        response = self.client.get("/ImagingStudy", query)
        assert response.status_code == status, f"{query} -> {response.status_code}: {response.get_json()}"
        return response.get_json()

    def patient_search(self, nhs: str, status: int = 200) -> dict[str, Any]:
        return self.search(("patient", nhs), status=status)

    def requests_by_trust(self) -> dict[str, list[tuple[str, str]]]:
        return {t: list(s.proxy.requests) for t, s in self.servers.items()}

    def clear_requests(self) -> None:
        for server in self.servers.values():
            server.proxy.clear()


# --------------------------------------------------------------------------- bundles


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", ()) if e["search"]["mode"] == "match"]


def match_ids(bundle: dict[str, Any]) -> list[str]:
    return [r["id"] for r in matches(bundle)]


def issues(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    outcomes = [e["resource"] for e in bundle.get("entry", ()) if e["search"]["mode"] == "outcome"]
    assert len(outcomes) <= 1, "more than one outcome entry"
    return [i for o in outcomes for i in o["issue"]]


def issues_naming(bundle: dict[str, Any], name: str, code: str | None = None) -> list[dict[str, Any]]:
    return [i for i in issues(bundle) if name in i.get("diagnostics", "") and (code is None or i["code"] == code)]


def endpoint_trusts(study: dict[str, Any]) -> set[str]:
    """Trust ids of every Endpoint a study or its series point at (`<trust>-wado-rs`, `<trust>-ihe-iid`)."""
    refs = [r["reference"] for r in study.get("endpoint", ())]
    refs += [r["reference"] for s in study.get("series", ()) for r in s.get("endpoint", ())]
    return {ref.removeprefix("Endpoint/").removesuffix("-wado-rs").removesuffix("-ihe-iid") for ref in refs}


def series_uids(study: dict[str, Any]) -> set[str]:
    return {s["uid"] for s in study.get("series", ())}


def disk_series(data: Path, trust: str, study_uid: str) -> set[str]:
    return {p.name for p in (data / trust / study_uid).iterdir() if p.is_dir()}


def delete_study(server: OrthancServer, orthanc_study_id: str) -> None:
    reply = requests.delete(f"{server.url}/studies/{orthanc_study_id}", timeout=30)
    assert reply.status_code == 200, reply.text

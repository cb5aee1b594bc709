"""A second, independent SMART client: PyPI `fhirclient` (SMART's client-py, 4.4.0).

client-py knows the server only through its CapabilityStatement: it reads the OAuth endpoints
from the `oauth-uris` extension of rest.security (not from .well-known/smart-configuration), so
this checks that the two discovery documents agree. It can do a Backend Services
client_credentials request itself when given a signed client assertion (`jwt_token`), but does
not sign one: the test signs it for the token URI that client-py discovered. Every resource it
reads is parsed into its R4 models, which refuse elements R4 does not have.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from conftest import HTTP_TIMEOUT_S, SYSTEM_SCOPE, backend_token, client_assertion
from fhirclient import client as smart_client
from fhirclient.auth import FHIROAuth2Auth
from fhirclient.models.endpoint import Endpoint
from fhirclient.models.imagingstudy import ImagingStudy
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRUnauthorizedException

pytestmark = pytest.mark.integration

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


@pytest.fixture(scope="module")
def facade(start_facade: Any) -> Any:
    return start_facade("client-py", workers=1)


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


@pytest.fixture(scope="module")
def patient_studies(manifest: dict[str, Any], patient: str) -> set[str]:
    return {s["study_uid"] for p in manifest["patients"] if p["nhs_number"] == patient for s in p["studies"]}


def new_client(facade: Any, **settings: Any) -> smart_client.FHIRClient:
    client = smart_client.FHIRClient(settings={"app_id": "portal", "api_base": facade.base, **settings})
    client.wants_patient = False  # a system client: no "launch/patient" added to the scope
    return client


def authorized_client(facade: Any) -> smart_client.FHIRClient:
    """Backend Services by client-py itself: discovery, then client_credentials with our assertion."""
    client = new_client(facade, scope=SYSTEM_SCOPE)
    assert client.prepare() is False, "no token yet"
    token_uri = client.server.auth.state["token_uri"]
    assertion = client_assertion(token_uri)
    client.jwt_token = assertion
    client.server.auth.jwt_token = assertion
    client.authorize()
    assert client.ready
    return client


def test_discovery_through_the_capability_statement_matches_smart_configuration(facade):
    well_known = requests.get(f"{facade.base}/.well-known/smart-configuration", timeout=HTTP_TIMEOUT_S).json()
    client = new_client(facade)

    assert client.prepare() is False  # discovered, not authorized
    auth = client.server.auth
    assert isinstance(auth, FHIROAuth2Auth), f"client-py found no OAuth endpoints: {type(auth).__name__}"
    assert auth.state["authorize_uri"] == well_known["authorization_endpoint"]
    assert auth.state["token_uri"] == well_known["token_endpoint"]
    assert auth.state["aud"] == facade.base
    security = client.server.capabilityStatement.rest[0].security
    assert OAUTH_URIS in [e.url for e in security.extension]
    assert any(c.code == "SMART-on-FHIR" for s in security.service or [] for c in s.coding or [])
    # client-py would send a user here for a launch: the authorize URL it builds is the server's.
    client.redirect = "http://127.0.0.1:9/callback"
    assert client.authorize_url.startswith(well_known["authorization_endpoint"] + "?")


def test_backend_services_token_by_client_py_reads_and_searches(facade, patient, patient_studies):
    client = authorized_client(facade)
    assert client.launch_context["token_type"].lower() == "bearer"
    assert set(client.launch_context["scope"].split()) == set(SYSTEM_SCOPE.split())

    person = Patient.read(patient, client.server)
    assert person.id == patient
    assert any(i.system == "https://fhir.nhs.uk/Id/nhs-number" and i.value == patient for i in person.identifier)

    search = ImagingStudy.where(struct={"patient": patient}).include("endpoint")
    found = list(search.perform_resources_iter(client.server))
    studies = [r for r in found if isinstance(r, ImagingStudy)]
    endpoints = {r.id: r for r in found if isinstance(r, Endpoint)}
    assert {s.id for s in studies} == patient_studies
    for study in studies:
        assert study.subject.reference == f"Patient/{patient}"
        refs = [e.reference for e in study.endpoint or []] + [
            e.reference for s in study.series or [] for e in s.endpoint or []
        ]
        assert refs and {r.split("/")[-1] for r in refs} <= set(endpoints)
    assert all(e.managingOrganization.display for e in endpoints.values())

    one = ImagingStudy.read(studies[0].id, client.server)
    assert one.id == studies[0].id and one.numberOfSeries == len(one.series)


def test_client_py_follows_paging_links(facade, patient, patient_studies):
    client = authorized_client(facade)
    pages = list(ImagingStudy.where(struct={"patient": patient, "_count": "2"}).perform_iter(client.server))
    assert len(pages) == -(-len(patient_studies) // 2)
    uids = [e.resource.id for page in pages for e in page.entry or [] if isinstance(e.resource, ImagingStudy)]
    assert sorted(uids) == sorted(patient_studies)


def test_client_py_with_a_token_obtained_separately(facade, patient, patient_studies):
    """The other way round: a token from `python -m app token`-style code, set on client-py's auth."""
    client = new_client(facade, scope=SYSTEM_SCOPE)
    client.prepare()
    client.server.auth.access_token = backend_token(facade)
    assert client.ready
    studies = ImagingStudy.where(struct={"patient": patient}).perform_resources_iter(client.server)
    assert {s.id for s in studies if isinstance(s, ImagingStudy)} == patient_studies


def test_client_py_without_a_token_is_refused(facade, patient):
    client = new_client(facade)
    client.prepare()
    with pytest.raises(FHIRUnauthorizedException) as refused:
        Patient.read(patient, client.server)
    assert refused.value.response.headers["WWW-Authenticate"].startswith("Bearer")

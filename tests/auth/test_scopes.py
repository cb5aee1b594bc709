"""app/core/scopes.py, pure and table-driven: parse_scope(s) and decide().

SMART App Launch 2.2 scopes: v1 (`.read`, `.write`, `.*`) and v2 (`c r u d s` letters, in that
order, with optional `?param=value` filters). A scope the server cannot honour exactly grants
nothing (fail closed); launch/openid/fhirUser are context requests, not grants.
"""

from __future__ import annotations

import pytest

from app.core.compartment import COMPARTMENT_TYPES, FILTERABLE
from app.core.scopes import Grant, Scopes, decide, parse_scope, parse_scopes

A = "9998785642"
FILTERS = {"ImagingStudy": frozenset({"modality", "status", "endpoint", "bodysite", "dicom-class"})}


def fs(letters: str) -> frozenset[str]:
    return frozenset(letters)


# ----------------------------------------------------------------------------- parse_scope: what is granted

GRANTED = [
    # v1
    ("patient/ImagingStudy.read", "patient", "ImagingStudy", "rs", ()),
    ("user/ImagingStudy.read", "user", "ImagingStudy", "rs", ()),
    ("system/ImagingStudy.read", "system", "ImagingStudy", "rs", ()),
    ("user/Patient.write", "user", "Patient", "cud", ()),
    ("system/Endpoint.*", "system", "Endpoint", "cruds", ()),
    ("patient/*.read", "patient", "*", "rs", ()),
    ("system/*.*", "system", "*", "cruds", ()),
    # v2 letters
    ("patient/ImagingStudy.rs", "patient", "ImagingStudy", "rs", ()),
    ("patient/ImagingStudy.r", "patient", "ImagingStudy", "r", ()),
    ("patient/ImagingStudy.s", "patient", "ImagingStudy", "s", ()),
    ("user/ImagingStudy.cruds", "user", "ImagingStudy", "cruds", ()),
    ("system/Organization.cud", "system", "Organization", "cud", ()),
    ("system/AuditEvent.rs", "system", "AuditEvent", "rs", ()),
    ("user/*.rs", "user", "*", "rs", ()),
    # v2 filters on allowed parameters
    ("patient/ImagingStudy.rs?modality=CT", "patient", "ImagingStudy", "rs", (("modality", "CT"),)),
    ("system/ImagingStudy.s?status=available", "system", "ImagingStudy", "s", (("status", "available"),)),
    (
        "user/ImagingStudy.rs?modality=CT&status=available",
        "user",
        "ImagingStudy",
        "rs",
        (("modality", "CT"), ("status", "available")),
    ),
    (
        "patient/ImagingStudy.rs?endpoint=Endpoint/bolton-wado-rs",
        "patient",
        "ImagingStudy",
        "rs",
        (("endpoint", "Endpoint/bolton-wado-rs"),),
    ),
    (
        "patient/ImagingStudy.rs?modality=http://dicom.nema.org/resources/ontology/DCM%7CCT",
        "patient",
        "ImagingStudy",
        "rs",
        (("modality", "http://dicom.nema.org/resources/ontology/DCM|CT"),),
    ),
]


@pytest.mark.parametrize(
    ("scope", "context", "resource_type", "letters", "filters"), GRANTED, ids=[g[0] for g in GRANTED]
)
def test_parse_scope_grants_exactly(
    scope: str, context: str, resource_type: str, letters: str, filters: tuple[tuple[str, str], ...]
) -> None:
    assert parse_scope(scope, FILTERS) == Grant(context, resource_type, fs(letters), filters)


GRANTS_NOTHING = [
    # filters this server cannot enforce
    "patient/ImagingStudy.rs?foo=bar",  # unknown filter parameter
    "patient/ImagingStudy.rs?modality=CT&foo=bar",  # one unknown among known ones
    "patient/ImagingStudy.rs?modality=",  # blank value
    "patient/ImagingStudy.rs?modality",  # no value at all
    "patient/ImagingStudy.rs?=CT",  # no name
    "patient/*.rs?modality=CT",  # filter on a wildcard type
    "user/Patient.rs?gender=female",  # type without filterable parameters
    "patient/ImagingStudy.rs?patient=9991750452",  # a filter that would widen the compartment
    # malformed
    "patient/ImagingStudy.sr",  # letters out of order
    "patient/ImagingStudy.rr",
    "patient/ImagingStudy.",
    "patient/ImagingStudy",
    "patient/ImagingStudy.readwrite",
    "patient/ImagingStudy.x",
    "patient/ImagingStudy.READ",
    "patient/imagingstudy.rs",
    "Patient/ImagingStudy.rs",
    "admin/ImagingStudy.rs",
    "patient/ImagingStudy.rs?",
    "patient/ImagingStudy.rs/extra",
    "patient/.rs",
    "patient//ImagingStudy.rs",
    "/ImagingStudy.rs",
]


@pytest.mark.parametrize("scope", GRANTS_NOTHING)
def test_parse_scope_unenforceable_grants_nothing(scope: str) -> None:
    assert parse_scope(scope, FILTERS) is None
    parsed = parse_scopes(scope, FILTERS)
    assert parsed.grants == ()
    assert parsed.matching("ImagingStudy", "r") == [] and parsed.matching("ImagingStudy", "s") == []


def test_parse_scope_filter_without_filterable_table_grants_nothing() -> None:
    assert parse_scope("patient/ImagingStudy.rs?modality=CT") is None
    assert parse_scope("patient/ImagingStudy.rs?modality=CT", FILTERABLE) is not None


@pytest.mark.parametrize(
    "scope",
    [
        "launch",
        "launch/patient",
        "launch/encounter",
        "openid",
        "fhirUser",
        "profile",
        "offline_access",
        "online_access",
    ],
)
def test_parse_scopes_context_scopes_go_to_other(scope: str) -> None:
    parsed = parse_scopes(f"{scope} patient/ImagingStudy.rs", FILTERS)
    assert scope in parsed.other
    assert parsed.grants == (Grant("patient", "ImagingStudy", fs("rs")),)


def test_parse_scopes_whitespace_separated_list() -> None:
    parsed = parse_scopes(
        "  openid fhirUser\tlaunch/patient\npatient/ImagingStudy.read   patient/Patient.rs user/Endpoint.r ", FILTERS
    )
    assert set(parsed.grants) == {
        Grant("patient", "ImagingStudy", fs("rs")),
        Grant("patient", "Patient", fs("rs")),
        Grant("user", "Endpoint", fs("r")),
    }
    assert parsed.other == frozenset({"openid", "fhirUser", "launch/patient"})
    assert parsed.text() == "fhirUser launch/patient openid"


def test_parse_scopes_empty_text_grants_nothing() -> None:
    assert parse_scopes("", FILTERS) == Scopes((), frozenset())


COVERS = [
    # scope, type, interaction, covered
    ("patient/ImagingStudy.read", "ImagingStudy", "r", True),
    ("patient/ImagingStudy.read", "ImagingStudy", "s", True),
    ("patient/ImagingStudy.r", "ImagingStudy", "r", True),
    ("patient/ImagingStudy.r", "ImagingStudy", "s", False),
    ("patient/ImagingStudy.s", "ImagingStudy", "s", True),
    ("patient/ImagingStudy.s", "ImagingStudy", "r", False),
    ("user/ImagingStudy.write", "ImagingStudy", "r", False),
    ("user/ImagingStudy.write", "ImagingStudy", "s", False),
    ("user/ImagingStudy.cud", "ImagingStudy", "r", False),
    ("system/*.rs", "AuditEvent", "s", True),
    ("system/*.r", "Endpoint", "s", False),
    ("system/Patient.rs", "ImagingStudy", "r", False),
    ("system/ImagingStudy.rs", "Patient", "r", False),
]


@pytest.mark.parametrize(
    ("scope", "resource_type", "interaction", "covered"), COVERS, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in COVERS]
)
def test_grant_covers_type_and_interaction(scope: str, resource_type: str, interaction: str, covered: bool) -> None:
    grant = parse_scope(scope, FILTERS)
    assert grant is not None
    assert grant.covers(resource_type, interaction) is covered
    assert bool(parse_scopes(scope, FILTERS).matching(resource_type, interaction)) is covered


# ----------------------------------------------------------------------------- decide()

CT = (("modality", "CT"),)
MR = (("modality", "MR"),)

DECISIONS = [
    # id, scopes, type, interaction, token patient, allowed, compartment patient, filters
    ("system-unnarrowed", "system/ImagingStudy.rs", "ImagingStudy", "s", None, True, None, ()),
    ("system-ignores-patient-claim", "system/ImagingStudy.rs", "ImagingStudy", "s", A, True, None, ()),
    ("user-unnarrowed", "user/ImagingStudy.rs", "ImagingStudy", "r", A, True, None, ()),
    ("patient-narrowed", "patient/ImagingStudy.rs", "ImagingStudy", "s", A, True, A, ()),
    ("patient-v1-narrowed", "patient/ImagingStudy.read", "ImagingStudy", "r", A, True, A, ()),
    ("patient-wildcard-narrowed", "patient/*.rs", "ImagingStudy", "s", A, True, A, ()),
    ("patient-on-Patient-narrowed", "patient/Patient.rs", "Patient", "r", A, True, A, ()),
    ("patient-on-AuditEvent-narrowed", "patient/AuditEvent.rs", "AuditEvent", "s", A, True, A, ()),
    ("patient-without-patient-denied", "patient/ImagingStudy.rs", "ImagingStudy", "s", None, False, None, ()),
    ("patient-wildcard-without-patient-denied", "patient/*.rs", "Endpoint", "r", None, False, None, ()),
    (
        "system-beats-patient-without-patient",
        "patient/ImagingStudy.rs system/ImagingStudy.rs",
        "ImagingStudy",
        "s",
        None,
        True,
        None,
        (),
    ),
    ("system-beats-patient", "patient/ImagingStudy.rs system/ImagingStudy.rs", "ImagingStudy", "s", A, True, None, ()),
    ("user-beats-patient", "patient/ImagingStudy.rs user/ImagingStudy.rs", "ImagingStudy", "r", A, True, None, ()),
    ("patient-Endpoint-not-compartment", "patient/Endpoint.rs", "Endpoint", "s", A, True, None, ()),
    ("patient-Organization-not-compartment", "patient/Organization.r", "Organization", "r", A, True, None, ()),
    ("patient-wildcard-Endpoint-not-compartment", "patient/*.rs", "Endpoint", "r", A, True, None, ()),
    ("read-only-cannot-search", "system/ImagingStudy.r", "ImagingStudy", "s", None, False, None, ()),
    ("search-only-cannot-read", "system/ImagingStudy.s", "ImagingStudy", "r", None, False, None, ()),
    ("write-cannot-read", "system/ImagingStudy.write", "ImagingStudy", "r", None, False, None, ()),
    ("cud-cannot-search", "user/ImagingStudy.cud", "ImagingStudy", "s", A, False, None, ()),
    ("other-type-denied", "system/Patient.rs", "ImagingStudy", "r", None, False, None, ()),
    ("context-scopes-only-denied", "openid fhirUser launch/patient", "ImagingStudy", "s", A, False, None, ()),
    ("no-scopes-denied", "", "ImagingStudy", "s", A, False, None, ()),
    ("malformed-denied", "patient/ImagingStudy.sr system/ImagingStudy.READ", "ImagingStudy", "s", A, False, None, ()),
    ("unknown-filter-denied", "system/ImagingStudy.rs?foo=bar", "ImagingStudy", "s", None, False, None, ()),
    ("filtered", "system/ImagingStudy.rs?modality=CT", "ImagingStudy", "s", None, True, None, (CT,)),
    ("patient-filtered", "patient/ImagingStudy.rs?modality=CT", "ImagingStudy", "s", A, True, A, (CT,)),
    (
        "unfiltered-beats-filtered",
        "system/ImagingStudy.rs?modality=CT system/ImagingStudy.rs",
        "ImagingStudy",
        "s",
        None,
        True,
        None,
        (),
    ),
    (
        "patient-unfiltered-beats-filtered",
        "patient/ImagingStudy.rs?modality=CT patient/ImagingStudy.rs",
        "ImagingStudy",
        "r",
        A,
        True,
        A,
        (),
    ),
    (
        "two-filtered-kept",
        "user/ImagingStudy.rs?modality=CT user/ImagingStudy.rs?modality=MR",
        "ImagingStudy",
        "s",
        None,
        True,
        None,
        (CT, MR),
    ),
    (
        "wide-unfiltered-beats-patient-filtered",
        "patient/ImagingStudy.rs?modality=CT system/ImagingStudy.rs",
        "ImagingStudy",
        "s",
        A,
        True,
        None,
        (),
    ),
]


@pytest.mark.parametrize(
    ("scopes", "resource_type", "interaction", "patient", "allowed", "compartment", "filters"),
    [d[1:] for d in DECISIONS],
    ids=[d[0] for d in DECISIONS],
)
def test_decide_table(
    scopes: str,
    resource_type: str,
    interaction: str,
    patient: str | None,
    allowed: bool,
    compartment: str | None,
    filters: tuple,
) -> None:
    decision = decide(parse_scopes(scopes, FILTERABLE), resource_type, interaction, patient, COMPARTMENT_TYPES)
    assert decision.allowed is allowed, decision.reason
    assert decision.compartment_patient == compartment
    assert decision.filters == filters
    if not allowed:
        assert decision.reason, "a denial must say why (it becomes the 403 diagnostics)"


def test_decide_patient_without_patient_says_so() -> None:
    decision = decide(parse_scopes("patient/ImagingStudy.rs", FILTERABLE), "ImagingStudy", "s", None, COMPARTMENT_TYPES)
    assert not decision.allowed and "patient" in decision.reason


def test_decide_compartment_only_for_compartment_types() -> None:
    scopes = parse_scopes("patient/*.rs", FILTERABLE)
    only_studies = frozenset({"ImagingStudy"})
    assert decide(scopes, "ImagingStudy", "s", A, only_studies).compartment_patient == A
    assert decide(scopes, "Patient", "s", A, only_studies).compartment_patient is None
    assert decide(scopes, "Patient", "s", A, frozenset({"Patient"})).compartment_patient == A
    assert decide(scopes, "ImagingStudy", "s", A, frozenset()).compartment_patient is None


def test_compartment_types_are_the_patient_data_types() -> None:
    assert {"ImagingStudy", "Patient", "AuditEvent"} <= COMPARTMENT_TYPES
    assert not {"Endpoint", "Organization"} & COMPARTMENT_TYPES

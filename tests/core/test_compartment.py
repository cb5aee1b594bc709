"""app/core/compartment.py, pure: the patient compartment and the intersection of v2 scope filters."""

from __future__ import annotations

import pytest

from app.core.compartment import Compartment, intersect, narrow_studies
from app.core.errors import Forbidden, NotFound
from app.core.scopes import Decision
from app.core.search.study import StudySearch
from app.core.search.values import Token

REALM = "https://facade.example/fhir"
A, B = "9992975962", "9990548609"


def scope(**fields: object) -> StudySearch:
    """A parsed scope filter, as the registry's parser would give it."""
    return StudySearch(**fields)  # type: ignore[arg-type]


def test_compartment_of_decision_carries_patient_and_filters() -> None:
    found = Compartment.of(Decision(True, A, ((("modality", "CT"),),)), REALM)
    assert (found.patient, found.filters) == (A, ((("modality", "CT"),),))


@pytest.mark.parametrize(
    ("named", "expected"),
    [(None, frozenset({A})), (frozenset({A}), frozenset({A})), (frozenset(), frozenset())],
)
def test_compartment_patients_narrows_to_context(named: frozenset[str] | None, expected: frozenset[str]) -> None:
    assert Compartment(REALM, A).patients(named) == expected


@pytest.mark.parametrize("named", [frozenset({B}), frozenset({A, B})])
def test_compartment_patients_naming_another_is_403(named: frozenset[str]) -> None:
    with pytest.raises(Forbidden) as refused:
        Compartment(REALM, A).patients(named)
    assert refused.value.status_code == 403
    assert 'error="insufficient_scope"' in refused.value.headers["WWW-Authenticate"]


def test_compartment_without_patient_leaves_criteria_alone() -> None:
    assert Compartment(REALM).patients(None) is None
    assert Compartment(REALM).patients(frozenset({B})) == frozenset({B})
    assert Compartment(REALM).admits(None) and Compartment(REALM).admits(B)


def test_compartment_admits_only_its_patient() -> None:
    found = Compartment(REALM, A)
    assert found.admits(A)
    assert not found.admits(B)
    assert not found.admits(None)  # an unresolved identity is nobody's, never the context patient's


@pytest.mark.parametrize(
    ("owners", "admitted"), [((A,), True), ((A, A), True), ((A, B), False), ((A, None), False), ((), False)]
)
def test_compartment_admits_all_owners(owners: tuple[str | None, ...], admitted: bool) -> None:
    assert Compartment(REALM, A).admits_all(owners) is admitted


def test_compartment_require_words_another_patient_like_nothing() -> None:
    with pytest.raises(NotFound) as refused:
        Compartment(REALM, A).require(B, f"Patient/{B}")
    assert refused.value.diagnostics == f"Patient/{B} is not known"
    Compartment(REALM, A).require(A, f"Patient/{A}")  # no error


def test_compartment_keep_drops_other_patients() -> None:
    items = [("s1", A), ("s2", B), ("s3", None)]
    assert Compartment(REALM, A).keep(items, lambda i: i[1]) == [("s1", A)]
    assert Compartment(REALM).keep(items, lambda i: i[1]) == items


def test_compartment_several_filters_are_403() -> None:
    with pytest.raises(Forbidden):
        Compartment(REALM, A, ((("modality", "CT"),), (("modality", "MR"),))).filter()


@pytest.mark.parametrize(
    ("client", "allowed", "expected"),
    [
        ((), ("CT",), ("CT",)),
        (("MR",), (), ("MR",)),
        (("MR",), ("CT",), ()),
        (("MR", "CT"), ("CT",), ("CT",)),
        (("CT", "MR", "US"), ("US", "CT"), ("CT", "US")),
    ],
)
def test_intersect_keeps_the_client_values_the_filter_allows(
    client: tuple[str, ...], allowed: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert intersect(client, allowed) == expected


def _narrow(search: StudySearch, filter_search: StudySearch, patient: str | None = A) -> StudySearch:
    compartment = Compartment(REALM, patient, ((("modality", "CT"),),))  # the pairs are parsed by `parse`
    return narrow_studies(search, compartment, lambda pairs: filter_search)


def test_narrow_studies_disjoint_modality_matches_nothing() -> None:
    """The fixed bug: modality=MR under ?modality=CT gave the CT studies; now it gives none."""
    found = _narrow(StudySearch(modalities=("MR",)), scope(modalities=("CT",)))
    assert found.matches_nothing  # the plan asks no archive
    assert found.study_uids is None  # the search stays as bounded (or not) as the client made it
    assert found.nhs_numbers == frozenset({A})


def test_narrow_studies_overlapping_modalities_keep_the_intersection() -> None:
    found = _narrow(StudySearch(modalities=("MR", "CT")), scope(modalities=("CT",)))
    assert found.modalities == ("CT",)
    assert not found.matches_nothing


def test_narrow_studies_without_client_criterion_takes_the_filter() -> None:
    found = _narrow(StudySearch(), scope(modalities=("CT",)))
    assert found.modalities == ("CT",) and not found.matches_nothing


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ({"statuses": ("cancelled",)}, {"statuses": ("available",)}),
        ({"dicom_classes": ("1.2.840.10008.5.1.4.1.1.2",)}, {"dicom_classes": ("1.2.840.10008.5.1.4.1.1.4",)}),
        ({"body_sites": (Token(None, "69536005"),)}, {"body_sites": (Token("http://snomed.info/sct", "51185008"),)}),
    ],
)
def test_narrow_studies_disjoint_criteria_match_nothing(client: dict[str, object], allowed: dict[str, object]) -> None:
    assert _narrow(StudySearch(**client), scope(**allowed)).matches_nothing  # type: ignore[arg-type]


def test_narrow_studies_body_sites_compare_by_code_whatever_the_system() -> None:
    found = _narrow(
        StudySearch(body_sites=(Token(None, "69536005"),)),
        scope(body_sites=(Token("http://snomed.info/sct", "69536005"),)),
    )
    assert found.body_sites == (Token(None, "69536005"),) and not found.matches_nothing


def test_narrow_studies_endpoints_are_intersected() -> None:
    found = _narrow(
        StudySearch(endpoint_ids=frozenset({"mft-wado-rs", "bolton-wado-rs"})),
        scope(endpoint_ids=frozenset({"mft-wado-rs"})),
    )
    assert found.endpoint_ids == frozenset({"mft-wado-rs"})
    disjoint = _narrow(
        StudySearch(endpoint_ids=frozenset({"bolton-wado-rs"})), scope(endpoint_ids=frozenset({"mft-wado-rs"}))
    )
    assert disjoint.endpoint_ids == frozenset()  # no trust is asked


def test_narrow_studies_keeps_the_client_study_uids_when_not_disjoint() -> None:
    found = _narrow(StudySearch(study_uids=frozenset({"1.2.3"})), scope(modalities=("CT",)))
    assert found.study_uids == frozenset({"1.2.3"}) and found.modalities == ("CT",) and not found.matches_nothing


def test_narrow_studies_without_filter_only_narrows_the_patient() -> None:
    search = StudySearch(modalities=("MR",))
    found = narrow_studies(search, Compartment(REALM, A), lambda pairs: pytest.fail("no filter to parse"))
    assert found.modalities == ("MR",) and found.nhs_numbers == frozenset({A})

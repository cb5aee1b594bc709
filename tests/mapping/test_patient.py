"""NHS numbers, how each trust's archive carries them, and the minimal Patient (app/core/identity.py, app/core/mapping/patient.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset as PydicomDataset
from pydicom.tag import Tag

from app.core import systems
from app.core.identity import is_nhs_number, nhs_number_problem
from app.core.mapping.patient import (
    local_patient_key,
    nhs_number_of,
    patient_resource,
    subject_reference,
)
from tests.mapping.dicom_builders import EMPTY, dataset
from tests.mapping.fhir import validate_resource

NHS = "9434765919"
OTHER_NHS = "4010232137"
LOCAL_SYSTEM = "https://fhir.nhs.uk/R0A/Id/local-patient-identifier"


def reference_check_digit(first_nine: str) -> int | None:
    """NHS Data Dictionary: weights 10..2, 11 - (sum mod 11); 11 -> 0; 10 -> no valid number."""
    remainder = sum(int(d) * (10 - i) for i, d in enumerate(first_nine)) % 11
    check = 11 - remainder
    return None if check == 10 else (0 if check == 11 else check)


# -- Modulus 11 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["9434765919", "9999999999", "4010232137", "1234567881", "1000000060"],
    ids=["nhs-example", "all-nines", "another", "check-digit-1", "check-digit-0-from-11"],
)
def test_nhs_number_problem_valid(value: str) -> None:
    assert nhs_number_problem(value) is None
    assert is_nhs_number(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("9434765918", "check digit"),
        ("9434765910", "check digit"),
        ("4010232138", "check digit"),
        ("1000000010", "check digit"),  # 1*10 + 1*2 = 12, 12 mod 11 = 1: check digit 10, never valid
        ("1000000019", "check digit"),
        ("1000000061", "check digit"),
        ("943476591", "10 digits"),
        ("94347659190", "10 digits"),
        ("943476591A", "10 digits"),
        ("ABCDEFGHIJ", "10 digits"),
        ("", "10 digits"),
        ("943 476 5919", "10 digits"),
        (" 943476591", "10 digits"),
        ("943476591*", "10 digits"),
        ("-943476591", "10 digits"),
        ("٩٤٣٤٧٦٥٩١٩", "10 digits"),  # Arabic-Indic digits: str.isdigit() is True for them
        ("９４３４７６５９１９", "10 digits"),  # fullwidth digits
        ("943476591¹", "10 digits"),  # superscript one: isdigit() but not a decimal digit
    ],
    ids=[
        "wrong-check-digit",
        "wrong-check-digit-0",
        "wrong-check-digit-other",
        "check-digit-10-a",
        "check-digit-10-b",
        "check-digit-0-wrong",
        "nine-digits",
        "eleven-digits",
        "trailing-letter",
        "letters",
        "empty",
        "spaces",
        "leading-space",
        "wildcard",
        "sign",
        "arabic-indic-digits",
        "fullwidth-digits",
        "superscript-digit",
    ],
)
def test_nhs_number_problem_invalid(value: str, why: str) -> None:
    problem = nhs_number_problem(value)
    assert problem is not None and why in problem
    assert repr(value) in problem
    assert not is_nhs_number(value)


def test_nhs_number_problem_check_digit_10_prefix_has_no_valid_number() -> None:
    assert reference_check_digit("100000001") is None
    assert not any(is_nhs_number(f"100000001{d}") for d in "0123456789")


def test_nhs_number_problem_agrees_with_reference_on_random_prefixes() -> None:
    rng = random.Random(20240305)
    for _ in range(500):
        prefix = f"{rng.randrange(10**9):09d}"
        check = reference_check_digit(prefix)
        for digit in range(10):
            assert is_nhs_number(f"{prefix}{digit}") == (digit == check), prefix


# -- nhs_number_of: the trust's rule --------------------------------------------------------------


def other_ids(*pairs: tuple[str, str | None]) -> list[dict[str, Any]]:
    return [dataset(PatientID=pid, IssuerOfPatientID=issuer) for pid, issuer in pairs]


XREF = {("mft", "MRN001", ""): NHS, ("srft", "MRN002", ""): OTHER_NHS, ("mft", "MRN003", "R0A"): OTHER_NHS}


@pytest.mark.parametrize(
    ("study", "match", "issuer", "expected"),
    [
        (dataset(PatientID=NHS, IssuerOfPatientID="NHS"), "patient_id", "NHS", NHS),
        (dataset(PatientID=NHS), "patient_id", "NHS", NHS),
        (dataset(PatientID=NHS, IssuerOfPatientID=EMPTY), "patient_id", "NHS", NHS),
        (dataset(PatientID=f" {NHS} ", IssuerOfPatientID="NHS"), "patient_id", "NHS", NHS),
        (dataset(PatientID=NHS, IssuerOfPatientID="RM2"), "patient_id", "NHS", None),
        (dataset(PatientID=NHS, IssuerOfPatientID="NHSN"), "patient_id", "NHSN", NHS),
        (dataset(PatientID=NHS, IssuerOfPatientID="NHS"), "patient_id", "NHSN", None),
        (dataset(PatientID="9434765918", IssuerOfPatientID="NHS"), "patient_id", "NHS", None),
        (dataset(PatientID="1000000015"), "patient_id", "NHS", None),
        (dataset(PatientID="943476591"), "patient_id", "NHS", None),
        (dataset(PatientID="٩٤٣٤٧٦٥٩١٩"), "patient_id", "NHS", None),
        (dataset(PatientID="*"), "patient_id", "NHS", None),
        (dataset(PatientName="Jones^Robert"), "patient_id", "NHS", None),
        # OtherPatientIDsSequence fallback
        (
            dataset(PatientID="MRN001", IssuerOfPatientID="RM2", OtherPatientIDsSequence=other_ids((NHS, "NHS"))),
            "patient_id",
            "NHS",
            NHS,
        ),
        (
            dataset(PatientID=NHS, IssuerOfPatientID="RM2", OtherPatientIDsSequence=other_ids((OTHER_NHS, "NHS"))),
            "patient_id",
            "NHS",
            OTHER_NHS,
        ),
        (
            dataset(PatientID="9434765918", OtherPatientIDsSequence=other_ids((OTHER_NHS, "NHS"))),
            "patient_id",
            "NHS",
            OTHER_NHS,
        ),
        (
            dataset(PatientID="MRN001", OtherPatientIDsSequence=other_ids(("X1", "RM2"), (NHS, "NHS"))),
            "patient_id",
            "NHS",
            NHS,
        ),
        (dataset(PatientID="MRN001", OtherPatientIDsSequence=other_ids((NHS, "RM2"))), "patient_id", "NHS", None),
        (dataset(PatientID="MRN001", OtherPatientIDsSequence=other_ids((NHS, None))), "patient_id", "NHS", None),
        (
            dataset(PatientID="MRN001", OtherPatientIDsSequence=other_ids(("9434765918", "NHS"))),
            "patient_id",
            "NHS",
            None,
        ),
        (dataset(PatientID="MRN001", OtherPatientIDsSequence=EMPTY), "patient_id", "NHS", None),
        # the cross-reference (local PatientID -> NHS number, per trust)
        (dataset(PatientID="MRN001", IssuerOfPatientID="RM2"), "xref", None, NHS),
        (dataset(PatientID=" MRN001 "), "xref", None, NHS),
        (dataset(PatientID="MRN002"), "xref", None, None),  # mapped, but at another trust
        (dataset(PatientID="MRN999"), "xref", None, None),
        (dataset(PatientID=NHS, IssuerOfPatientID="NHS"), "xref", None, None),  # PatientID is local here
        (dataset(PatientID="MRN999", OtherPatientIDsSequence=other_ids((OTHER_NHS, "NHS"))), "xref", None, OTHER_NHS),
        # the record names two patients: it belongs to nobody (never shown for either)
        (dataset(PatientID="MRN001", OtherPatientIDsSequence=other_ids((OTHER_NHS, "NHS"))), "xref", None, None),
        (dataset(PatientID="MRN001", OtherPatientIDsSequence=other_ids((NHS, "NHS"))), "xref", None, NHS),
        (
            dataset(PatientID=NHS, IssuerOfPatientID="NHS", OtherPatientIDsSequence=other_ids((OTHER_NHS, "NHS"))),
            "patient_id",
            "NHS",
            None,
        ),
        (dataset(OtherPatientIDsSequence=other_ids((OTHER_NHS, "NHS"))), "xref", None, OTHER_NHS),
        (dataset(PatientID="MRN003", IssuerOfPatientID="R0A"), "xref", None, OTHER_NHS),
        (dataset(PatientID="MRN003", IssuerOfPatientID="RM2"), "xref", None, None),
        (dataset(PatientID="MRN003"), "xref", None, None),
    ],
    ids=[
        "pid-issuer-nhs",
        "pid-no-issuer",
        "pid-empty-issuer",
        "pid-padded",
        "pid-other-issuer",
        "pid-configured-issuer",
        "pid-issuer-not-the-configured-one",
        "pid-wrong-check-digit",
        "pid-check-digit-10",
        "pid-nine-digits",
        "pid-unicode-digits",
        "pid-wildcard",
        "no-pid",
        "other-ids-fallback",
        "other-ids-when-pid-issuer-differs",
        "other-ids-when-pid-invalid",
        "other-ids-second-item",
        "other-ids-other-issuer",
        "other-ids-no-issuer",
        "other-ids-invalid",
        "other-ids-empty-sequence",
        "xref-hit",
        "xref-padded",
        "xref-other-trust",
        "xref-miss",
        "xref-ignores-nhs-like-pid",
        "xref-miss-other-ids",
        "xref-conflicts-with-other-ids",
        "xref-agrees-with-other-ids",
        "pid-conflicts-with-other-ids",
        "xref-no-pid-other-ids",
        "xref-issuer-match",
        "xref-issuer-mismatch",
        "xref-issuer-missing",
    ],
)
def test_nhs_number_of_by_rule(study: dict[str, Any], match: str, issuer: str | None, expected: str | None) -> None:
    assert nhs_number_of(study, match, issuer, "mft", XREF) == expected


@pytest.mark.parametrize(
    "bad",
    ["9434765918", "1000000015", "943476591", "94347659190", "9434765919*"],
    ids=["wrong-check-digit", "check-digit-10", "nine-digits", "eleven-digits", "wildcard"],
)
def test_nhs_number_of_never_accepts_invalid_patient_id(bad: str) -> None:
    for held_issuer in ("NHS", None):
        study = dataset(PatientID=bad, IssuerOfPatientID=held_issuer)
        assert nhs_number_of(study, "patient_id", "NHS", "mft", {}) is None
        with_other = dataset(PatientID="MRN001", OtherPatientIDsSequence=other_ids((bad, "NHS")))
        assert nhs_number_of(with_other, "patient_id", "NHS", "mft", {}) is None
        assert nhs_number_of(with_other, "xref", None, "mft", {}) is None


def test_local_patient_key_with_and_without_issuer() -> None:
    assert local_patient_key(dataset(PatientID="MRN001", IssuerOfPatientID="RM2")) == ("MRN001", "RM2")
    assert local_patient_key(dataset(PatientID="MRN001")) == ("MRN001", "")
    assert local_patient_key(dataset(PatientID=EMPTY)) is None


# -- subject_reference ----------------------------------------------------------------------------


def test_subject_reference_by_nhs_number() -> None:
    study = dataset(PatientID=NHS, PatientName="Jones^Robert^^Mr")
    assert subject_reference(NHS, study, LOCAL_SYSTEM) == {
        "reference": f"Patient/{NHS}",
        "identifier": {"system": systems.NHS_NUMBER, "value": NHS},
        "display": "Mr Robert Jones",
    }


def test_subject_reference_local_identifier_without_nhs_number() -> None:
    study = dataset(PatientID="MRN001")
    assert subject_reference(None, study, LOCAL_SYSTEM) == {"identifier": {"system": LOCAL_SYSTEM, "value": "MRN001"}}


@pytest.mark.parametrize(
    ("names", "display"),
    [
        ("^", None),  # one name, blank: no display
        (["^", "Jones^Robert^^Mr"], "Mr Robert Jones"),  # the first name that is not blank
        (["Jones^Robert", "Smith^Jane"], "Robert Jones"),
        ({"vr": "PN", "Value": ["Jones^Robert"]}, "Robert Jones"),  # a name held as a plain string
        ({"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]}, "太郎 山田"),
        (EMPTY, None),
    ],
)
def test_subject_reference_display_from_the_first_name_held(names: Any, display: str | None) -> None:
    reference = subject_reference(NHS, dataset(PatientID=NHS, PatientName=names), LOCAL_SYSTEM)
    assert reference.get("display") == display


# -- patient_resource -----------------------------------------------------------------------------


def test_patient_resource_identity() -> None:
    patient = patient_resource(NHS, [dataset(PatientName="Jones^Robert", PatientSex="M", PatientBirthDate="19700101")])
    assert patient["resourceType"] == "Patient"
    assert patient["id"] == NHS
    assert patient["identifier"] == [{"system": systems.NHS_NUMBER, "value": NHS}]
    validate_resource(patient)


@pytest.mark.parametrize(
    ("pn", "expected"),
    [
        ("Smith^Jane", {"family": "Smith", "given": ["Jane"], "text": "Jane Smith"}),
        (
            "Smith^Jane^Anne^Dr^PhD",
            {
                "family": "Smith",
                "given": ["Jane", "Anne"],
                "prefix": ["Dr"],
                "suffix": ["PhD"],
                "text": "Dr Jane Anne Smith PhD",
            },
        ),
        ("Smith", {"family": "Smith", "text": "Smith"}),
        ("Smith^^^Mrs", {"family": "Smith", "prefix": ["Mrs"], "text": "Mrs Smith"}),
        ("^Jane", {"given": ["Jane"], "text": "Jane"}),
        ("Yamada^Tarou=山田^太郎", {"family": "Yamada", "given": ["Tarou"], "text": "Tarou Yamada"}),
    ],
    ids=["family-given", "all-five-parts", "family-only", "prefix-no-given", "given-only", "with-ideographic"],
)
def test_patient_resource_name_parts(pn: str, expected: dict[str, Any]) -> None:
    patient = patient_resource(NHS, [dataset(PatientName=pn)])
    assert patient["name"] == [{"use": "official", **expected}]
    validate_resource(patient)


def test_patient_resource_ideographic_only_name() -> None:
    study = dataset(PatientName={"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]})
    patient = patient_resource(NHS, [study])
    assert patient["name"][0]["family"] == "山田"
    assert patient["name"][0]["given"] == ["太郎"]


@pytest.mark.parametrize(
    ("sex", "gender"),
    [
        ("M", "male"),
        ("F", "female"),
        ("O", "other"),
        ("m", "male"),
        ("f", "female"),
        ("X", "unknown"),
        (EMPTY, "unknown"),
        (None, "unknown"),
        ("", "unknown"),
    ],
    ids=["M", "F", "O", "lower-m", "lower-f", "not-a-dicom-sex", "empty-element", "absent", "empty-string"],
)
def test_patient_resource_gender_mapping(sex: Any, gender: str) -> None:
    patient = patient_resource(NHS, [dataset(PatientSex=sex)])
    assert patient["gender"] == gender
    validate_resource(patient)


def test_patient_resource_most_common_birth_date_wins() -> None:
    studies = [dataset(PatientBirthDate=d) for d in ("19810202", "19700101", "19700101", "19810202", "19700101")]
    assert patient_resource(NHS, studies)["birthDate"] == "1970-01-01"


@pytest.mark.parametrize(
    "order", [("19810202", "19700101"), ("19700101", "19810202")], ids=["later-first", "earlier-first"]
)
def test_patient_resource_birth_date_tie_is_deterministic(order: tuple[str, str]) -> None:
    studies = [dataset(PatientBirthDate=d) for d in order]
    assert patient_resource(NHS, studies)["birthDate"] == "1970-01-01"


def test_patient_resource_birth_date_ignores_partial_and_invalid() -> None:
    studies = [dataset(PatientBirthDate=d) for d in ("1970", "197001", "19701345", "abcd", "19810202")]
    patient = patient_resource(NHS, studies)
    assert patient["birthDate"] == "1981-02-02"
    validate_resource(patient)
    assert "birthDate" not in patient_resource(NHS, [dataset(PatientBirthDate="1970")])


def test_patient_resource_most_common_name_wins_and_ties_are_deterministic() -> None:
    names = ["Jones^Robert", "Jones^Bob", "Jones^Robert"]
    assert patient_resource(NHS, [dataset(PatientName=n) for n in names])["name"][0]["given"] == ["Robert"]
    tie = ["Jones^Robert", "Jones^Bob"]
    first = patient_resource(NHS, [dataset(PatientName=n) for n in tie])
    second = patient_resource(NHS, [dataset(PatientName=n) for n in reversed(tie)])
    assert first == second
    assert first["name"][0]["given"] == ["Bob"]


def test_patient_resource_most_common_sex_wins() -> None:
    studies = [dataset(PatientSex=s) for s in ("F", "M", "F")]
    assert patient_resource(NHS, studies)["gender"] == "female"


def test_patient_resource_without_demographics() -> None:
    patient = patient_resource(NHS, [dataset(PatientID=NHS)])
    assert "name" not in patient and "birthDate" not in patient
    assert patient["gender"] == "unknown"
    validate_resource(patient)


@pytest.mark.parametrize(
    ("charset", "raw", "family", "given"),
    [
        ("ISO_IR 192", b"\xc3\x93'Brien^Zo\xc3\xab", "Ó'Brien", "Zoë"),
        ("ISO_IR 100", b"M\xfcller^Ren\xe9e", "Müller", "Renée"),
    ],
    ids=["utf-8", "latin-1"],
)
def test_patient_resource_non_ascii_name_from_pydicom(charset: str, raw: bytes, family: str, given: str) -> None:
    ds = PydicomDataset()
    ds.SpecificCharacterSet = charset
    ds[0x00100010] = RawDataElement(Tag(0x00100010), "PN", len(raw), raw, 0, False, True)
    patient = patient_resource(NHS, [ds.to_json_dict()])
    assert patient["name"][0]["family"] == family
    assert patient["name"][0]["given"] == [given]
    validate_resource(patient)

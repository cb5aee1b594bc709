"""The compiled mapper (the tables turned into generated functions) equals the interpreted one.

Same resources and same issues, in the same order, on every study of the demo dataset and on fuzzed
DICOM JSON datasets (hypothesis): odd values, several values, empty elements, wrong types, bad UIDs,
dates and codes. When the interpreted mapper raises, the compiled one raises the same exception type.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.uid import UID

from app.archives.folder.archive import FolderArchive
from app.core.mapping.compile import generated_source
from app.core.mapping.context import TrustMapping
from app.core.mapping.engine import StudyMapper
from app.core.mapping.patient import subject_reference
from app.core.mapping.tables import load_mapper
from app.core.query import StudyQuery
from tests.mapping.dicom_builders import tag

try:  # pytest "prepend" import mode puts tests/ on sys.path
    from demo_dataset import demo_dataset
except ImportError:  # pragma: no cover
    from tests.demo_dataset import demo_dataset  # type: ignore[no-redef]

COMPILED = load_mapper()
INTERPRETED = load_mapper(compiled=False)
TRUST = TrustMapping(
    id="mft",
    ods_code="R0A",
    name="Manchester University NHS Foundation Trust",
    accession_system="https://fhir.nhs.uk/R0A/Id/accession-number",
    zone=ZoneInfo("Europe/London"),
    endpoint_id="R0A-wado-rs",
    viewer_endpoint_id="R0A-viewer",
    issuers={"RMC": ("https://fhir.nhs.uk/RMC/Id/accession-number", {"reference": "Organization/RMC"})},
)


def outcome(
    mapper: StudyMapper, study: dict[str, Any], series: list[dict[str, Any]], instances: dict[str, Any] | None
) -> tuple[Any, list[dict[str, Any]]]:
    issues: list[dict[str, Any]] = []
    subject = {"reference": "Patient/x", "display": "X"}
    try:
        return mapper.map_study(study, series, instances, TRUST, subject, issues), issues
    except Exception as exc:  # the interpreted mapper's exceptions are part of the behaviour to match
        return ("raised", type(exc).__name__), issues


def same(study: dict[str, Any], series: list[dict[str, Any]], instances: dict[str, Any] | None = None) -> None:
    assert outcome(COMPILED, study, series, instances) == outcome(INTERPRETED, study, series, instances)


def test_the_facade_runs_the_compiled_mapper_and_its_source_can_be_read() -> None:
    assert COMPILED.compiled and not INTERPRETED.compiled
    source = generated_source()
    compile(source, "generated", "exec")
    for name in ("def map_study_fields", "def map_series_fields", "def map_instance_fields"):
        assert name in source
    for element in ("ImagingStudy.identifier", "ImagingStudy.series.bodySite", "ImagingStudy.series.instance.uid"):
        assert f"# {element}:" in source, "every table row is in the generated code"


@pytest.fixture(scope="module")
def demo_inputs() -> list[tuple[dict, list[dict], dict]]:
    data: Path = demo_dataset()
    out = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        archive = FolderArchive(folder.name, folder)
        everything = StudyQuery()
        by_study: dict[str, list[dict]] = defaultdict(list)
        for series in archive.find_series(everything).datasets:
            by_study[series["0020000D"]["Value"][0]].append(series)
        for study in archive.find_studies(everything).datasets:
            uid = study["0020000D"]["Value"][0]
            instances: dict[str, list[dict]] = defaultdict(list)
            for instance in archive.find_instances(uid).datasets:
                instances[instance["0020000E"]["Value"][0]].append(instance)
            out.append((study, by_study[uid], dict(instances)))
    return out


def test_every_demo_study_maps_the_same(demo_inputs: list[tuple[dict, list[dict], dict]]) -> None:
    assert len(demo_inputs) > 100
    for study, series, instances in demo_inputs:
        same(study, series, None)
        same(study, series, instances)
        subject = subject_reference(None, study, "urn:local")
        assert COMPILED.map_study(study, series, None, TRUST, subject, []) is not None


# -- fuzzed datasets ------------------------------------------------------------------------------
def _section_tags(mapper: StudyMapper, level: str) -> list[str]:
    rows = {"study": mapper.study_rows, "series": mapper.series_rows, "instance": mapper.instance_rows}[level]
    return sorted({t for row in rows for t in row[3]})


WORDS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "CT",
            "mr",
            " MR ",
            "XX",
            "HEAD",
            "knee",
            "L",
            "r",
            "U",
            "Q",
            "20240305",
            "2024",
            "202403",
            "20241332",
            "17000101",
            "101500",
            "101500.123456",
            "2500",
            "1015",
            "+0100",
            "-1500",
            "+0530",
            "1.2.826.0.1.3680043.8.498.1",
            "1.2.3.04",
            "1..2",
            "abc",
            "2.25.0",
            "Smith^Jane",
            "^",
            "=",
            "ISO",
            "RMC",
            "12",
            "-3",
            "99999999999",
            "1.2.840.10008.5.1.4.1.1.2",
        ]
    ),
    st.text(max_size=8),
)
# Padded with spaces now and then, as archives send fixed-width values.
TEXT = st.builds(
    lambda pad, word, end: pad + word + end, st.sampled_from(["", "", " "]), WORDS, st.sampled_from(["", "", " "])
)
# pydicom's UID, as the folder archive's datasets hold UIDs (the compiled mapper reads it as text)
AS_UID = TEXT.map(lambda text: UID(text, validation_mode=config.IGNORE))
SCALAR = st.one_of(
    TEXT,
    AS_UID,
    st.integers(-5, 2**32),
    st.sampled_from([0, -1, 2**31 - 1, 2**31]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
)
PN = st.one_of(
    st.fixed_dictionaries({"Alphabetic": TEXT}),
    st.fixed_dictionaries({}, optional={"Ideographic": TEXT, "Phonetic": TEXT}),
    TEXT,
)


@st.composite
def item(draw: st.DrawFn) -> dict[str, Any]:
    """A sequence item: code sequences and the accession issuer."""
    keys = ["CodeValue", "CodingSchemeDesignator", "CodeMeaning", "LongCodeValue", "URNCodeValue",
            "LocalNamespaceEntityID", "UniversalEntityID", "UniversalEntityIDType"]  # fmt: skip
    chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=5))
    scheme = st.sampled_from(["DCM", "SCT", "LN", "99LOCAL", ""])
    return {tag(k): {"vr": "LO", "Value": [draw(scheme if k == "CodingSchemeDesignator" else TEXT)]} for k in chosen}


@st.composite
def element(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return {"vr": "LO"}  # empty
    if kind == 1:
        return {"vr": "PN", "Value": draw(st.lists(PN, min_size=1, max_size=3))}
    if kind == 2:
        return {"vr": "SQ", "Value": draw(st.lists(item(), max_size=2))}
    if kind == 3:
        return {"vr": "IS", "Value": draw(st.lists(SCALAR, max_size=3))}
    if kind == 4:
        return {"vr": "LO", "Value": draw(st.lists(TEXT, min_size=2, max_size=3))}
    if kind == 5:
        return {"vr": "UI", "Value": [draw(AS_UID)]}
    return {"vr": "LO", "Value": [draw(TEXT)]}


@st.composite
def dataset(draw: st.DrawFn, level: str, study_uid: str | None = None) -> dict[str, Any]:
    tags = _section_tags(INTERPRETED, level) + ([tag("StudyInstanceUID")] if level != "study" else [])
    out = {t: draw(element()) for t in tags if draw(st.integers(0, 2))}  # each attribute in 2 of 3 datasets
    if study_uid is not None and draw(st.booleans()):
        out[tag("StudyInstanceUID")] = {"vr": "UI", "Value": [study_uid]}
    if draw(st.integers(0, 3)):  # most datasets carry the identifiers, so that the rest gets mapped
        uid_tag = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}[level]
        uid = draw(st.sampled_from(["1.2.3.4", "1.2.3.5", "2.25.7", "1.02"]))
        out[tag(uid_tag)] = {
            "vr": "UI",
            "Value": [UID(uid, validation_mode=config.IGNORE) if draw(st.booleans()) else uid],
        }
        if level == "series" and draw(st.booleans()):
            out[tag("Modality")] = {"vr": "CS", "Value": [draw(st.sampled_from(["CT", "MR", "mr ", "ZZ"]))]}
        if level == "instance" and draw(st.booleans()):
            out[tag("SOPClassUID")] = {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    study=dataset("study"),
    series=st.lists(dataset("series"), max_size=3),
    instances=st.lists(dataset("instance"), max_size=3),
    with_instances=st.booleans(),
)
def test_fuzzed_datasets_map_the_same(
    study: dict[str, Any], series: list[dict[str, Any]], instances: list[dict[str, Any]], with_instances: bool
) -> None:
    by_series: dict[str, list[dict[str, Any]]] = {"1.2.3.4": instances, "1.2.3.5": instances[:1]}
    same(study, series, by_series if with_instances else None)


# Studies whose series all map (a valid UID and modality each), with odd counts, numbers and
# modalities: what StudyMapper does around the rows (series order, numberOfSeries, numberOfInstances
# summed from the series, the study's modalities completed from its series) is compared too.
COUNT = st.one_of(
    st.integers(0, 40).map(lambda n: {"vr": "IS", "Value": [n]}),
    element(),
    st.sampled_from([{"vr": "IS", "Value": ["7"]}, {"vr": "IS", "Value": [-1]}, {"vr": "IS"}]),
)


@st.composite
def well_formed(draw: st.DrawFn, level: str) -> dict[str, Any]:
    out = draw(dataset(level))
    if level == "study":
        out[tag("StudyInstanceUID")] = {"vr": "UI", "Value": ["1.2.3"]}
        codes = st.lists(st.sampled_from(["CT", "MR", "US", "mr", "ZZ"]), min_size=1, max_size=3)
        out[tag("ModalitiesInStudy")] = {"vr": "CS", "Value": draw(codes)}
    else:
        out[tag("SeriesInstanceUID")] = {"vr": "UI", "Value": [draw(st.sampled_from(["1.2.3.4", "1.2.3.5", "2.25.7"]))]}
        out[tag("Modality")] = {"vr": "CS", "Value": [draw(st.sampled_from(["CT", "MR", "US", "mr "]))]}
    for keyword in {"study": ("NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")}.get(
        level, ("SeriesNumber", "NumberOfSeriesRelatedInstances")
    ):
        if keyword == "SeriesNumber" and draw(st.integers(0, 3)):  # mostly numbers that repeat and rise or not
            out[tag(keyword)] = {"vr": "IS", "Value": [draw(st.integers(0, 2))]}
        elif draw(st.booleans()):
            out[tag(keyword)] = draw(COUNT)
        else:
            out.pop(tag(keyword), None)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    study=well_formed("study"),
    series=st.lists(well_formed("series"), min_size=1, max_size=4),
    invalid=st.lists(dataset("series"), max_size=1),
    instances=st.lists(dataset("instance"), max_size=2),
    with_instances=st.booleans(),
)
def test_fuzzed_studies_with_mapped_series_map_the_same(
    study: dict[str, Any],
    series: list[dict[str, Any]],
    invalid: list[dict[str, Any]],
    instances: list[dict[str, Any]],
    with_instances: bool,
) -> None:
    by_series: dict[str, list[dict[str, Any]]] = {"1.2.3.4": instances, "2.25.7": instances[:1]}
    same(study, series + invalid, by_series if with_instances else None)

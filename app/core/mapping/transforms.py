"""The named transforms that the mapping tables in mappings/ refer to.

Each transform has the signature ``(dataset, tags, args, ctx) -> value | None``: it reads the
tags its table row names, returns plain JSON-ready data, and reports through ``ctx.report``
anything it could not map instead of guessing. None means "leave the element out".
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from app.core import dicom_json as dj
from app.core import systems
from app.core.mapping.context import MappingContext
from app.core.mapping.dates import DateProblem, fhir_datetime

Transform = Callable[[dj.Dataset, tuple[str, ...], dict[str, Any], MappingContext], Any]

MAX_UNSIGNED = 2**31 - 1  # FHIR unsignedInt
# The fixed parts of the identifiers, shared by every resource (emitted dicts are never mutated).
ACCESSION_TYPE = {"coding": [{"system": systems.V2_0203, "code": "ACSN", "display": "Accession ID"}]}
STUDY_ID_TYPE = {"text": "DICOM Study ID"}

TRANSFORMS: dict[str, Transform] = {}
# Optional per-transform preparation of a row's args, run once when a table is compiled.
PREPARE: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def transform(func: Transform) -> Transform:
    TRANSFORMS[func.__name__] = func
    return func


def _single(ds: dj.Dataset, tag: str, ctx: MappingContext, element: str) -> str | None:
    """The value of a field FHIR holds once; extra DICOM values are reported, the first is used."""
    item = ds.get(tag)
    if item is None:
        return None
    values = item.get("Value")
    if values and len(values) == 1 and type(values[0]) is str:  # the common case, kept cheap
        return values[0].strip() or None
    found = dj.all_text(ds, tag)
    if len(found) > 1:
        ctx.report(element, f"{ctx.keyword(tag)} has {len(found)} values; the first is used")
    return found[0] if found else None


@transform
def constant(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    return args["value"]


@transform
def string(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> str | None:
    return _single(ds, tags[0], ctx, args["element"])


@transform
def uid(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> str | None:
    found = dj.first_text(ds, tags[0])
    if found is None or dj.is_uid(found):
        return found
    ctx.report(args["element"], f"{ctx.keyword(tags[0])} is not a valid DICOM UID")
    return None


@transform
def unsigned_int(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> int | None:
    element = ds.get(tags[0])
    found = element.get("Value") if element else None
    if not found:
        return None
    if type(found[0]) is int and 0 <= found[0] <= MAX_UNSIGNED:
        return found[0]
    if found[0] is None or found[0] == "":
        return None
    number = dj.unsigned(found[0])
    if number is None or number > MAX_UNSIGNED:
        ctx.report(args["element"], f"{ctx.keyword(tags[0])} {found[0]!r} is not an integer from 0 to {MAX_UNSIGNED}")
        return None
    return number


@transform
def date_time(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> str | None:
    """DA + TM (+ TimezoneOffsetFromUTC, taken from the study when the series has none)."""
    da = dj.first_text(ds, tags[0])
    tm = dj.first_text(ds, tags[1])
    offset = dj.first_text(ds, tags[2]) if len(tags) > 2 else None
    try:
        return fhir_datetime(da, tm, offset or ctx.study_offset, ctx.trust.zone)
    except DateProblem as problem:
        ctx.report(args["element"], f"{ctx.keyword(tags[0])}/{ctx.keyword(tags[1])}: {problem}; left out")
        return None


@transform
def study_uid_identifier(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    found = dj.uid(ds, tags[0])
    return {"system": systems.DICOM_UID, "value": f"{systems.OID_PREFIX}{found}"} if found else None


@transform
def accession_identifier(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    """Accession with the ACSN type; its system from an ISO issuer OID, from the issuing trust (a copy
    held by another trust keeps its origin's accession), else the holding trust's system."""
    value = _single(ds, tags[0], ctx, args["element"])
    if not value:
        return None
    system, assigner = ctx.trust.accession_system, ctx.trust.organization_reference
    for item in dj.items(ds, tags[1]) if len(tags) > 1 else ():
        oid = dj.first_text(item, dj.UNIVERSAL_ENTITY_ID)
        local = dj.first_text(item, dj.LOCAL_NAMESPACE_ENTITY_ID)  # the issuing trust's ODS code
        if oid and dj.first_text(item, dj.UNIVERSAL_ENTITY_ID_TYPE) == "ISO" and dj.is_uid(oid):
            system = f"{systems.OID_PREFIX}{oid}"
        elif local and local in ctx.trust.issuers:
            system, assigner = ctx.trust.issuers[local]
    return {
        "use": "usual",
        "type": ACCESSION_TYPE,
        "system": system,
        "value": value,
        "assigner": assigner,
    }


@transform
def study_id_identifier(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    value = dj.first_text(ds, tags[0])
    if not value:
        return None
    return {
        "use": "secondary",
        "type": STUDY_ID_TYPE,
        "value": value,
        "assigner": ctx.trust.organization_reference,
    }


def _modality_coding(code: str, ctx: MappingContext, element: str) -> dict[str, str] | None:
    coding = ctx.terminology.modalities.get(code)
    if coding is None:
        ctx.report(element, f"modality {code!r} is not a DICOM modality code (CID 33); left out")
    return coding


@transform
def modality_codings(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    item = ds.get(tags[0])
    values = item.get("Value") if item else None
    if not values:
        return None
    table = ctx.terminology.modalities
    out: list[dict[str, str]] = []
    for value in values:
        coding = table.get(value) if type(value) is str else None
        if coding is None:
            code = dj.text(value)
            coding = _modality_coding(code.upper(), ctx, args["element"]) if code else None
        if coding is not None and coding not in out:
            out.append(coding)
    return out or None


@transform
def modality_coding(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    item = ds.get(tags[0])
    values = item.get("Value") if item else None
    if values and type(values[0]) is str and values[0] in ctx.terminology.modalities:
        return ctx.terminology.modalities[values[0]]
    code = dj.first_text(ds, tags[0])
    return _modality_coding(code.upper(), ctx, args["element"]) if code else None


def _person(value: Any) -> dict[str, str] | None:
    if type(value) is dict:
        alphabetic = value.get("Alphabetic")
        if type(alphabetic) is str and alphabetic.strip("^ "):
            return person_reference_of(alphabetic)
    pn = dj.person_name_text(value)
    return person_reference_of(pn) if pn else None


@lru_cache(maxsize=8192)
def person_reference_of(pn: str) -> dict[str, str]:
    """Shared per name: the same clinicians appear on study after study (emitted dicts are never mutated)."""
    return {"display": dj.person_display(pn)}


@transform
def person_reference(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    item = ds.get(tags[0])
    values = item.get("Value") if item else None
    if not values:
        return None
    if len(values) == 1:
        return _person(values[0])
    people = [p for p in map(_person, values) if p]
    if len(people) > 1:
        ctx.report(args["element"], f"{ctx.keyword(tags[0])} has {len(people)} values; the first is used")
    return people[0] if people else None


@transform
def person_references(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    item = ds.get(tags[0])
    values = item.get("Value") if item else None
    if not values:
        return None
    people = [p for p in map(_person, values) if p]
    return people or None


def _prepare_performers(args: dict[str, Any]) -> dict[str, Any]:
    functions = [
        {
            "coding": [{"system": systems.PARTICIPATION_TYPE, "code": r["code"], "display": r["display"]}],
            "text": r["text"],
        }
        for r in args["roles"]
    ]
    return {**args, "functions": functions}


PREPARE["performers"] = _prepare_performers


@transform
def performers(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    """PerformingPhysicianName and OperatorsName, each as performer with its role."""
    out: list[dict[str, Any]] = []
    for tag, function in zip(tags, args["functions"], strict=True):
        item = ds.get(tag)
        if item is not None:
            out.extend(
                {"function": function, "actor": actor} for actor in map(_person, item.get("Value") or ()) if actor
            )
    return out or None


def _coding(item: dj.Dataset, ctx: MappingContext, element: str) -> dict[str, str] | None:
    code = (
        dj.first_text(item, dj.CODE_VALUE)
        or dj.first_text(item, dj.LONG_CODE_VALUE)
        or dj.first_text(item, dj.URN_CODE_VALUE)
    )
    scheme = dj.first_text(item, dj.CODING_SCHEME_DESIGNATOR)
    meaning = dj.first_text(item, dj.CODE_MEANING)
    system = ctx.terminology.coding_schemes.get(scheme or "")
    if code and system:
        coding = {"system": system, "code": code}
        if meaning:
            coding["display"] = meaning
        return coding
    if code:
        kept = "its meaning is kept as text" if meaning else "it has no meaning to keep, so it is left out"
        ctx.report(
            element, f"coding scheme {scheme!r} of code {code!r} has no known FHIR system; {kept}", "information"
        )
    return None


def _concept(item: dj.Dataset, ctx: MappingContext, element: str) -> dict[str, Any] | None:
    coding = _coding(item, ctx, element)
    meaning = dj.first_text(item, dj.CODE_MEANING)
    concept: dict[str, Any] = {}
    if coding:
        concept["coding"] = [coding]
    if meaning:
        concept["text"] = meaning
    return concept or None


@transform
def code_sequence_concepts(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    found = [_concept(item, ctx, args["element"]) for item in dj.items(ds, tags[0])]
    return [c for c in found if c] or None


@transform
def reason_concepts(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    """ReasonForRequestedProcedure (free text) and its code sequence, when the archive has it."""
    concepts = [_concept(item, ctx, args["element"]) for item in dj.items(ds, tags[1])] if len(tags) > 1 else []
    out = [c for c in concepts if c]
    out.extend({"text": t} for t in dj.all_text(ds, tags[0]))
    return out or None


@transform
def location_reference(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    """Institution, department and address as the display of a Location reference."""
    parts = [dj.first_text(ds, tag) for tag in tags]
    words = [p for p in parts if p]
    return {"display": ", ".join(words)} if words else None


@transform
def subject_reference(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    return ctx.subject


@transform
def trust_endpoints(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    return list(ctx.trust.study_endpoints)


@transform
def body_site(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    term = dj.first_text(ds, tags[0])
    if not term:
        return None
    found = ctx.terminology.body_sites.get(term.upper().replace(" ", ""))
    if found is None:
        ctx.report(args["element"], f"BodyPartExamined {term!r} is not a DICOM defined term (PS3.16 Annex L); left out")
    return found


@transform
def laterality(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    for tag in tags:
        term = dj.first_text(ds, tag)
        if term:
            found = ctx.terminology.laterality.get(term.upper())
            if found is None and term.upper() != "U":
                ctx.report(args["element"], f"{ctx.keyword(tag)} {term!r} is not L, R, B or U; left out")
            return found
    return None


@transform
def sop_class(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    found = dj.uid(ds, tags[0])
    return _sop_class_coding(found, ctx.terminology.sop_classes.get(found)) if found else None


@lru_cache(maxsize=512)
def _sop_class_coding(uid: str, name: str | None) -> dict[str, str]:
    """Shared per SOP class: a study has thousands of instances of a handful of classes."""
    coding = {"system": systems.URI, "code": f"{systems.OID_PREFIX}{uid}"}
    if name:
        coding["display"] = name
    return coding


@transform
def instance_title(ds: dj.Dataset, tags: tuple[str, ...], args: dict[str, Any], ctx: MappingContext) -> Any:
    """ContentLabel, else the concept name's meaning, else DocumentTitle."""
    label, concept, title = tags
    found = dj.first_text(ds, label)
    if found:
        return found
    for item in dj.items(ds, concept):
        meaning = dj.first_text(item, dj.CODE_MEANING)
        if meaning:
            return meaning
    return dj.first_text(ds, title)

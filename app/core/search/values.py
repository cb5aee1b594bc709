"""Readers of search values that several resource types share: lists, tokens, UIDs, NHS numbers. Pure.

Each raises InvalidRequest (400) naming the parameter at fault; none lets a value through that could
act as a DICOM wildcard or list upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core import dicom_json as dj
from app.core import systems
from app.core.errors import QUOTED_MAX, InvalidRequest, quote
from app.core.identity import nhs_number_problem


@dataclass(frozen=True)
class Token:
    system: str | None
    code: str


def split_values(value: str) -> list[str]:
    """Commas separate alternatives (OR); an empty alternative is refused."""
    parts = [p.strip() for p in value.split(",")]
    if not all(parts):
        raise InvalidRequest(f"empty value in {quote(value)}")
    return parts


def parse_token(raw: str) -> Token:
    """`[system]|code` or a bare code (no system given: None)."""
    if "|" in raw:
        system, code = raw.split("|", 1)
        return Token(system or None, code)
    return Token(None, raw)


def uid(raw: str, name: str) -> str:
    """A DICOM UID, `urn:oid:` prefix allowed (and removed)."""
    value = raw.removeprefix(systems.OID_PREFIX)
    if not dj.is_uid(value):
        raise InvalidRequest(f"{quote(raw)} is not a DICOM UID", name)
    return value


def nhs_number(raw: str, name: str) -> str:
    problem = nhs_number_problem(raw)
    if problem:
        # nhs_number_problem quotes the whole value; anything that long is not 10 digits.
        too_long = f"{quote(raw)} is not an NHS number: it must be exactly 10 digits"
        raise InvalidRequest(problem if len(raw) <= QUOTED_MAX else too_long, name)
    return raw


def patient_reference(raw: str, name: str) -> str:
    """`Patient/<NHS number>` (relative or absolute, a version ignored) or the bare NHS number."""
    ref = raw.rsplit("/_history", 1)[0]
    parts = ref.split("/")
    if len(parts) >= 2:
        if parts[-2] != "Patient":
            raise InvalidRequest(f"{quote(raw)}: only Patient references are supported", name)
        ref = parts[-1]
    return nhs_number(ref, name)


def patient_identifier(raw: str, name: str) -> str:
    """`[https://fhir.nhs.uk/Id/nhs-number]|<NHS number>`: the only patient identifier searched on."""
    token = parse_token(raw)
    if token.system not in (None, systems.NHS_NUMBER):
        raise InvalidRequest(f"{quote(raw)}: patients are identified by NHS number ({systems.NHS_NUMBER})", name)
    return nhs_number(token.code, name)

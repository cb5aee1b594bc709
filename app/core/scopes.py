"""SMART App Launch scopes (v1 and v2), parsed and checked. Pure.

    patient/ImagingStudy.read        v1: read means read and search
    user/*.rs                        v2: r = read, s = search (c, u, d parsed, never granted here)
    system/ImagingStudy.rs?modality=CT   v2 with a search-parameter filter

A scope this server cannot honour exactly (an unknown filter parameter, a malformed string) grants
nothing: when in doubt, no data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)(\?.+)?$")
_V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset("cruds")}


@dataclass(frozen=True)
class Grant:
    """One resource scope: who (context), on what type, which interactions, narrowed by filters."""

    context: str
    resource_type: str
    interactions: frozenset[str]
    filters: tuple[tuple[str, str], ...] = ()

    def covers(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.interactions


@dataclass(frozen=True)
class Scopes:
    """All the scopes of a token."""

    grants: tuple[Grant, ...]
    other: frozenset[str]  # launch, openid, fhirUser, offline_access ...

    def matching(self, resource_type: str, interaction: str) -> list[Grant]:
        return [g for g in self.grants if g.covers(resource_type, interaction)]

    def text(self) -> str:
        return " ".join(sorted(self.other))


def parse_scope(scope: str, filterable: dict[str, frozenset[str]] | None = None) -> Grant | None:
    """One scope string -> Grant; None for a non-resource scope or one we cannot enforce."""
    match = _SCOPE.match(scope)
    if not match:
        return None
    context, resource_type, permissions, query = match.groups()
    interactions = _V1.get(permissions, frozenset(permissions))
    if not interactions:
        return None
    filters: tuple[tuple[str, str], ...] = ()
    if query:
        filters = tuple(parse_qsl(query[1:], keep_blank_values=True))
        allowed = (filterable or {}).get(resource_type, frozenset())
        if not filters or any(name not in allowed or not value for name, value in filters):
            return None  # a filter we cannot apply must not become an unfiltered grant
    return Grant(context, resource_type, interactions, filters)


def parse_scopes(text: str, filterable: dict[str, frozenset[str]] | None = None) -> Scopes:
    grants, other = [], set()
    for scope in text.split():
        if _SCOPE.match(scope):
            grant = parse_scope(scope, filterable)
            if grant is not None:
                grants.append(grant)
        else:
            other.add(scope)
    return Scopes(tuple(grants), frozenset(other))


@dataclass(frozen=True)
class Decision:
    """Whether a request may proceed, and under which narrowing."""

    allowed: bool
    compartment_patient: str | None = None  # set: only this patient's data
    filters: tuple[tuple[tuple[str, str], ...], ...] = ()  # OR of AND-filters; empty: unfiltered
    reason: str = ""


def decide(
    scopes: Scopes, resource_type: str, interaction: str, patient: str | None, compartment_types: frozenset[str]
) -> Decision:
    """Decide from the token's scopes, before any data is touched.

    System and user grants are not narrowed to a patient; a patient grant needs the token's patient
    context (without one it grants nothing) and, for a type in the patient compartment, narrows the
    request to that patient. The widest grant wins; an unfiltered grant beats filtered ones.
    """
    found = scopes.matching(resource_type, interaction)
    wide = [g for g in found if g.context in ("system", "user")]
    narrow = [g for g in found if g.context == "patient"]
    if narrow and patient is None and not wide:
        return Decision(False, reason="patient scopes need a patient in the launch context; none was given")
    chosen = wide or (narrow if patient is not None else [])
    if not chosen:
        verb = {"r": "read", "s": "search"}.get(interaction, interaction)
        return Decision(False, reason=f"no granted scope allows {verb} of {resource_type}")
    filters = () if any(not g.filters for g in chosen) else tuple(g.filters for g in chosen)
    narrowed = patient if not wide and resource_type in compartment_types else None
    return Decision(True, narrowed, filters)

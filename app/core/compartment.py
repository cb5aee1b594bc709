"""The patient compartment: the one policy every path applies under a patient-context token. Pure.

A token's scopes decide (app.core.scopes.decide) whether a request is narrowed to one patient and
which SMART v2 scope filters apply. This module is where that decision is applied, for every path:

    search         no patient named: the context patient; another patient named: 403 (SMART Imaging
                   Access); v2 scope filters intersected with the client's own criteria
    read           a resource of another patient: 404, byte for byte the answer for a resource that does
                   not exist (neither names the id asked for); the refusal names the targeted patient to the
                   audit (FhirError.patients), never to the client
    results        defence in depth: anything of another patient is dropped before it is shown
    _include       included resources pass the compartment of their own type (Patient under patient/Patient.r)
    cursors        a paging cursor is a search: it is narrowed again on every page
    $ihe-pix       only the context patient's own identifiers; anything else reads "not found"
    image gateway  a study whose owner is not the context patient reads "not found"; so does, whatever
                   the token, a study whose identity does not resolve to one patient
    launch         an EHR launch's study must belong to the launch's patient
    AuditEvent     system scopes only (not in any patient's compartment)

Which types are in the compartment, and which search parameters a scope may filter on, are
written here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from app.core.errors import Forbidden, NotFound
from app.core.scopes import Decision
from app.core.search.study import StudySearch
from app.core.search.values import Token

# Types whose resources belong to one patient; Endpoint, Organization and Practitioner are directory data.
COMPARTMENT_TYPES = frozenset({"ImagingStudy", "Patient", "AuditEvent", "DocumentReference", "DiagnosticReport"})
# Types no patient's compartment holds and only system scopes reach (the trail of every client's accesses).
SYSTEM_ONLY_TYPES = frozenset({"AuditEvent"})
# Search parameters a v2 scope may filter on, per type (a scope filtering on anything else grants nothing).
FILTERABLE = {
    "ImagingStudy": frozenset({"modality", "status", "endpoint", "bodysite", "dicom-class"}),
    "*": frozenset(),
}
# The one answer for "not yours" and "not there" alike: a lookup's wording must not tell them apart.
NOT_KNOWN = "is not known"

Filters = tuple[tuple[str, str], ...]
T = TypeVar("T")


@dataclass(frozen=True)
class Compartment:
    """One request's compartment: `patient` (None: not narrowed) and the v2 filter of its scope."""

    realm: str
    patient: str | None = None
    filters: tuple[Filters, ...] = ()

    @classmethod
    def of(cls, decision: Decision, realm: str) -> Compartment:
        return cls(realm, decision.compartment_patient, decision.filters)

    # -- what may be asked ------------------------------------------------------------------
    def patients(self, named: frozenset[str] | None) -> frozenset[str] | None:
        """A search's patient criterion under this compartment: none named means the context patient;
        naming another patient is refused (403) before any archive is asked."""
        if self.patient is None:
            return named
        if named is None:
            return frozenset({self.patient})
        others = named - {self.patient}
        if others:
            reason = "the search names a patient outside the token's patient context"
            raise Forbidden(self.realm, reason, patients=tuple(sorted(others)))
        return named

    def filter(self) -> Filters:
        """The one v2 scope filter to intersect with a search (empty: unfiltered)."""
        if len(self.filters) > 1:
            raise Forbidden(self.realm, "several filtered scopes for one type cannot be combined; ask for one")
        return self.filters[0] if self.filters else ()

    def for_images(self) -> Compartment:
        """This compartment for image retrieval: a scope filter cannot be applied to pixels, so a filtered
        scope opens no images (403); ask for an unfiltered ImagingStudy read scope."""
        if self.filters:
            raise Forbidden(
                self.realm,
                "a filtered ImagingStudy scope does not grant image retrieval: "
                "ask for an unfiltered ImagingStudy read scope",
                "patient/ImagingStudy.r",
            )
        return self

    # -- what may be shown ------------------------------------------------------------------
    def admits(self, patient: str | None) -> bool:
        """Whether a resource of `patient` (None: identity unresolved) may be shown."""
        return self.patient is None or patient == self.patient

    def admits_all(self, patients: Iterable[str | None]) -> bool:
        """Whether a resource held under all these patients may be shown, whatever the token: only when its
        identity resolves to one patient (none unresolved, no two patients) that this compartment admits.
        An empty set: nothing to show."""
        found = set(patients)
        return len(found) == 1 and None not in found and self.admits(next(iter(found)))

    def keep(self, resources: Iterable[T], patient_of: Callable[[T], str | None]) -> list[T]:
        """Defence in depth: the resources of the context patient only."""
        return [r for r in resources if self.admits(patient_of(r))]

    def require(self, patient: str | None, what: str) -> None:
        """404 for a resource outside the compartment, worded as for one that does not exist (`what` must then
        not name the id asked for); the patient is kept for the audit only."""
        if not self.admits(patient):
            raise NotFound(f"{what} {NOT_KNOWN}", patients=(patient,) if patient else ())


def intersect(client: tuple[T, ...], scope: tuple[T, ...], key: Callable[[T], object] = lambda v: v) -> tuple[T, ...]:
    """The client's values that the scope filter also allows (the filter's own when the client gave none).

    An empty answer with both given means the two are disjoint: the caller must then match nothing,
    never fall back to either side's values.
    """
    if not scope:
        return client
    if not client:
        return scope
    allowed = {key(v) for v in scope}
    return tuple(v for v in client if key(v) in allowed)


def _code(token: Token) -> str:
    return token.code


def narrow_studies(
    search: StudySearch, compartment: Compartment, parse: Callable[[Filters], StudySearch]
) -> StudySearch:
    """An ImagingStudy search under a compartment, before any archive is asked: the patient criterion
    narrowed, and the scope's filter (parsed by `parse`, as a search of its own) intersected with the
    client's criteria. Disjoint criteria match nothing, never the filter's values alone."""
    narrowed = replace(search, nhs_numbers=compartment.patients(search.nhs_numbers))
    pairs = compartment.filter()
    if not pairs:
        return narrowed
    scope = parse(pairs)
    modalities = intersect(narrowed.modalities, scope.modalities)
    statuses = intersect(narrowed.statuses, scope.statuses)
    classes = intersect(narrowed.dicom_classes, scope.dicom_classes)
    sites = intersect(narrowed.body_sites, scope.body_sites, _code)
    endpoints = narrowed.endpoint_ids
    if scope.endpoint_ids is not None:
        endpoints = scope.endpoint_ids if endpoints is None else endpoints & scope.endpoint_ids
    disjoint = any(
        client and allowed and not both
        for client, allowed, both in (
            (narrowed.modalities, scope.modalities, modalities),
            (narrowed.statuses, scope.statuses, statuses),
            (narrowed.dicom_classes, scope.dicom_classes, classes),
            (narrowed.body_sites, scope.body_sites, sites),
        )
    )
    return replace(
        narrowed,
        modalities=modalities,
        statuses=statuses,
        dicom_classes=classes,
        body_sites=sites,
        endpoint_ids=endpoints,  # an empty set asks no archive
        matches_nothing=narrowed.matches_nothing or disjoint,  # the plan then asks no archive at all
    )

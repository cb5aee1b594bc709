"""The names code used before the search-parameter registry, kept while it moves to the registry.

New code imports from app.core.search.registry (the machinery), .study (ImagingStudy), .audit
(AuditEvent), .resources (Patient, Endpoint, Organization, SEARCHES) and .values (shared readers).
Still used by app/web/fhir/views.py, app/services/imaging.py, app/federation/search.py and
app/core/bundle.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from app.core.search.registry import COMMON, Paging, Pairs, read_paging, unknown_parameters
from app.core.search.study import IMAGING_STUDY, ParsedQuery, StudyParser, StudySearch, parse_study_search
from app.core.search.values import Token, nhs_number
from app.core.search.values import parse_token as _token
from app.core.search.values import split_values as _split

__all__ = [
    "COMMON",
    "STUDY_PARAMETERS",
    "Paging",
    "Pairs",
    "ParsedQuery",
    "StudySearch",
    "Token",
    "_split",
    "_token",
    "nhs_number",
    "parse_paging",
    "parse_study_search",
    "unknown_parameters",
]

STUDY_PARAMETERS: Mapping[str, Callable[[StudyParser, str, str], None]] = {
    name: parameter.parse for parameter in IMAGING_STUDY.parameters for name in parameter.names
}
"""Every ImagingStudy query name (aliases included) -> its parser: IMAGING_STUDY.known and .parameter(name)."""


def parse_paging(
    pairs: Pairs, default_count: int, max_count: int, includes: frozenset[str], elements: frozenset[str], sortable: bool
) -> tuple[Paging, Pairs]:
    """The shared result parameters; returns them with their canonical pairs (ResourceSearch.paging)."""
    return read_paging(
        pairs, default_count, max_count, includes=includes, elements=elements, sort="started" if sortable else None
    )

"""The search-parameter registry: one declaration per resource type of everything its search reads.

A `ResourceSearch` holds a type's search parameters (`SearchParameter`: the FHIR name and type,
the documentation, the other query names that mean it, such as modifiers and chains, the parser
of one value, and the OpenAPI schema and example), its `_include` values, its `_elements` and the
element `_sort` orders by. Everything else follows from it: the parsing (below and in the per-type
modules), the unknown-parameter check of `Prefer: handling=strict`, the CapabilityStatement
(app/web/fhir/capability.py), the OpenAPI document (app/web/fhir/openapi.py) and the README's API
table (tests/core/test_search_registry.py checks it).

The declarations: study.py (ImagingStudy), document_reference.py (DocumentReference), audit.py (AuditEvent),
resources.py (Patient, Endpoint, Organization, and SEARCHES, every type by name).

Commas separate alternatives (OR); a repeated parameter narrows (AND). Unknown parameters are
ignored (and left out of the self link) unless the client asked for `Prefer: handling=strict`.
Pure: every value is validated here, before any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, Literal, TypeVar

from app.core.errors import InvalidRequest, quote, quote_all
from app.core.search.values import split_values

S = TypeVar("S")  # the state a type's parameters are applied to
Q = TypeVar("Q")  # what a type's search gives its view
Pairs = list[tuple[str, str]]
SearchType = Literal["number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"]

COMMON = ("_count", "_format", "_pretty", "_summary", "_elements", "_sort", "_include", "_cursor")
"""Result and output parameters: never "unknown", whatever the type (one a type does not offer is ignored)."""
DOMAIN_RESOURCE_ELEMENTS = (
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
)
"""The root elements every DomainResource has (FHIR R4 Resource and DomainResource): `_elements` may name
them on every type that offers `_elements`, besides the type's own."""


@dataclass(frozen=True, kw_only=True)
class QueryName:
    """A name a search reads from the query (or form), as the OpenAPI document describes it."""

    name: str
    documentation: str  # markdown: the OpenAPI description (and the CapabilityStatement's, for a parameter)
    schema: Mapping[str, Any]  # JSON Schema of one value; a $ref names the OpenAPI document's components/schemas
    example: Any = None  # a value that finds the demo data's example study or patient (a list when repeated)
    repeated: bool = False  # documented as repeatable (AND, e.g. a date range): an array, style form, explode


@dataclass(frozen=True, kw_only=True)
class SearchParameter(QueryName, Generic[S]):
    """A search parameter of one type. `parse(state, name, value)` applies one value (`name` is the query
    name used: the parameter's or an alias's) to the search state, or raises InvalidRequest."""

    type: SearchType
    parse: Callable[[S, str, str], None]
    aliases: tuple[QueryName, ...] = ()  # other query names parsed by `parse`: modifiers, chains

    @property
    def query_names(self) -> tuple[QueryName, ...]:
        return (self, *self.aliases)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(q.name for q in self.query_names)


@dataclass(frozen=True, kw_only=True)
class ResultParameter(QueryName):
    """A result parameter (_count, _summary, _elements, _sort, _include, _cursor) as one type offers it."""

    type: SearchType
    in_capability: bool  # listed in the CapabilityStatement's searchParam (_include is searchInclude there)


@dataclass(frozen=True)
class Include:
    value: str  # ImagingStudy:endpoint
    target: str  # the type it brings in: Endpoint


@dataclass
class Paging:
    """The result-shaping parameters every search type shares."""

    count: int = 50
    offset: int = 0
    summary_count: bool = False
    elements: tuple[str, ...] = ()
    sort_descending: bool = True
    includes: tuple[str, ...] = ()


@dataclass
class ParsedSearch(Generic[Q]):
    """A validated search: what the view asks for, the result parameters, and the recognised pairs
    (canonical and sorted, for the self and paging links and the cursors)."""

    query: Q
    paging: Paging
    used: Pairs


def unknown_parameters(pairs: Pairs, known: set[str] | frozenset[str]) -> list[str]:
    return sorted({n for n, _ in pairs if n not in known and n not in COMMON})


def read_paging(
    pairs: Pairs,
    default_count: int,
    max_count: int,
    *,
    includes: frozenset[str],
    elements: frozenset[str],
    sort: str | None,
) -> tuple[Paging, Pairs]:
    """The result parameters; returns them with their canonical pairs. `sort`: the element `_sort`
    orders by (None: `_sort` is ignored)."""
    paging = Paging(count=default_count)
    used: Pairs = []
    for name, value in pairs:
        if name == "_count":
            if not (value.isascii() and value.isdigit()):  # str.isdigit() alone accepts "²", which int() refuses
                raise InvalidRequest(f"_count must be a non-negative integer, not {quote(value)}", name)
            paging.count = min(int(value), max_count)
            paging.summary_count = paging.summary_count or paging.count == 0
            used.append((name, str(paging.count)))
        elif name == "_summary":
            if value not in ("count", "false"):
                raise InvalidRequest("_summary supports 'count' and 'false'", name)
            paging.summary_count = paging.summary_count or value == "count"
            used.append((name, value))
        elif name == "_elements":
            wanted = tuple(split_values(value))
            unknown = [e for e in wanted if e not in elements]
            if unknown:
                raise InvalidRequest(f"_elements: unknown element(s) {quote_all(unknown, quoted=False)}", name)
            paging.elements = wanted
            used.append((name, ",".join(wanted)))
        elif name == "_sort" and sort is not None:
            if value not in (sort, f"-{sort}"):
                raise InvalidRequest(f"_sort supports '{sort}' and '-{sort}'", name)
            paging.sort_descending = value.startswith("-")
            used.append((name, value))
        elif name == "_include":
            if value not in includes:
                raise InvalidRequest(f"_include supports {', '.join(sorted(includes)) or 'nothing here'}", name)
            paging.includes += (value,)
            used.append((name, value))
    return paging, used


COUNT = ResultParameter(
    name="_count",
    type="number",
    documentation="Page size, capped by the configured maximum; `_count=0` gives the total only.",
    schema={"type": "integer", "minimum": 0},
    example=10,
    in_capability=True,
)
SUMMARY = ResultParameter(
    name="_summary",
    type="token",
    documentation="`count` gives the total only.",
    schema={"type": "string", "enum": ["count", "false"]},
    example="false",
    in_capability=True,
)
CURSOR = ResultParameter(
    name="_cursor",
    type="special",
    documentation="A paging cursor from a `next`/`previous` link (signed; an edited one answers 400). "
    "It carries the whole query.",
    schema={"type": "string"},
    in_capability=False,
)


@dataclass(frozen=True, kw_only=True)
class ResourceSearch(Generic[S]):
    """Everything one type's search reads, declared once."""

    type: str
    parameters: tuple[SearchParameter[S], ...]
    elements: tuple[str, ...] = ()  # the type's own root elements _elements may name (none: any _elements is 400)
    includes: tuple[Include, ...] = ()
    sort: str | None = None  # the element _sort orders by, newest first by default (None: _sort is ignored)
    refuse_empty: bool = True  # `name=` is 400 (False: the parser reads the empty value)

    def __post_init__(self) -> None:
        names = [n for p in self.parameters for n in p.names]
        clashes = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(COMMON)))
        if clashes:
            raise ValueError(f"{self.type}: query names declared twice or shadowing a result parameter: {clashes}")

    @cached_property
    def _by_name(self) -> dict[str, SearchParameter[S]]:
        return {name: p for p in self.parameters for name in p.names}

    @property
    def known(self) -> frozenset[str]:
        """Every query name of the type's parameters (aliases included; result parameters are in COMMON)."""
        return frozenset(self._by_name)

    def parameter(self, name: str) -> SearchParameter[S] | None:
        """The parameter a query name means (an alias gives its parameter), or None."""
        return self._by_name.get(name)

    @property
    def root_elements(self) -> tuple[str, ...]:
        """Every root element `_elements` may name: the type's own and the DomainResource ones (none when the
        type offers no `_elements`)."""
        return (*self.elements, *DOMAIN_RESOURCE_ELEMENTS) if self.elements else ()

    @property
    def include_targets(self) -> dict[str, str]:
        """_include value -> the type it brings in."""
        return {i.value: i.target for i in self.includes}

    def unknown(self, pairs: Pairs) -> list[str]:
        """The names that are neither this type's parameters nor result parameters, sorted."""
        return unknown_parameters(pairs, self.known)

    def criteria(self, state: S, pairs: Pairs) -> Pairs:
        """Apply each recognised pair to `state`, in order; returns those pairs (unknown ones are skipped)."""
        used: Pairs = []
        for name, value in pairs:
            parameter = self._by_name.get(name)
            if parameter is None:
                continue
            if not value and self.refuse_empty:
                raise InvalidRequest(f"parameter {name} has an empty value", name)
            parameter.parse(state, name, value)
            used.append((name, value))
        return used

    def paging(self, pairs: Pairs, default_count: int, max_count: int) -> tuple[Paging, Pairs]:
        """The result parameters, checked against what this type offers."""
        return read_paging(
            pairs,
            default_count,
            max_count,
            includes=frozenset(self.include_targets),
            elements=frozenset(self.root_elements),
            sort=self.sort,
        )

    def parse(self, state: S, pairs: Pairs, default_count: int, max_count: int) -> tuple[Paging, Pairs]:
        """`criteria`, then `paging`; returns the paging and every recognised pair, canonical and sorted."""
        used = self.criteria(state, pairs)
        paging, paging_used = self.paging(pairs, default_count, max_count)
        return paging, sorted(used + paging_used)

    def result_parameters(self) -> tuple[ResultParameter, ...]:
        """The result parameters this type offers, as documented."""
        offered = [COUNT, SUMMARY]
        if self.elements:
            offered.append(
                ResultParameter(
                    name="_elements",
                    type="string",
                    documentation=f"Top-level elements to return, comma-separated, among {', '.join(self.elements)}, "
                    f"and {', '.join(DOMAIN_RESOURCE_ELEMENTS)} (mandatory ones are always kept).",
                    schema={"type": "string"},
                    example=",".join(self.elements[:3]),
                    in_capability=True,
                )
            )
        if self.sort is not None:
            offered.append(
                ResultParameter(
                    name="_sort",
                    type="special",
                    documentation=f"`-{self.sort}` (newest first, the default) or `{self.sort}`.",
                    schema={"type": "string", "enum": [self.sort, f"-{self.sort}"]},
                    example=f"-{self.sort}",
                    in_capability=True,
                )
            )
        if self.includes:
            targets = [f"{t}s" for t in dict.fromkeys(i.target for i in self.includes)]
            listed = " or ".join([", ".join(targets[:-1]), targets[-1]] if len(targets) > 1 else targets)
            offered.append(
                ResultParameter(
                    name="_include",
                    type="special",
                    documentation=f"Bring in the page's {listed} (only types the token may read).",
                    schema={"type": "string", "enum": [i.value for i in self.includes]},
                    example=[self.includes[0].value],
                    repeated=True,
                    in_capability=False,
                )
            )
        offered.append(CURSOR)
        return tuple(offered)

    def query_names(self) -> tuple[QueryName, ...]:
        """Every name the search reads: parameters, their aliases, then the result parameters."""
        return (*(q for p in self.parameters for q in p.query_names), *self.result_parameters())

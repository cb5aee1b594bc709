"""The mapping tables compiled into Python functions, once, at start-up.

The tables in mappings/ stay the single source of truth: this module turns their resolved rows
(engine.compile_rows) into the source of three functions, `map_study_fields`, `map_series_fields`
and `map_instance_fields`, each `(ds, ctx, out) -> out`, that do exactly what engine._apply does
with the same rows, without the per-row loop. Each row reads its attributes once, with their tags
written into the source, and the common shape of its data (one string, an integer, a known code, a
person name, a date the mapping has met before) is mapped inline; any other shape, and anything
that would be reported, goes to the row's named transform, called exactly as the interpreted mapper
calls it. So the compiled mapper and the interpreted one give the same resources and the same issues
(tests/mapping/test_compiled.py proves it on the demo studies and on fuzzed datasets).

Inspect the generated source: `python -m app.core.mapping.compile` (or `generated_source()`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from pydicom.uid import UID

from app.core import dicom_json as dj
from app.core import systems
from app.core.mapping.context import MappingContext, Terminology
from app.core.mapping.dates import PROBLEM, datetime_or_problem
from app.core.mapping.engine import Row
from app.core.mapping.transforms import (
    ACCESSION_TYPE,
    MAX_UNSIGNED,
    STUDY_ID_TYPE,
    TRANSFORMS,
    person_reference_of,
)

Fields = Callable[[dj.Dataset, MappingContext, dict[str, Any]], dict[str, Any]]
SECTIONS = ("study", "series", "instance")
# Transforms that map nothing and report nothing when none of their attributes is present.
_NOTHING_WHEN_ABSENT = frozenset(TRANSFORMS) - {"constant", "subject_reference", "trust_endpoints"}
# Conditions on an element `e`, the shapes nearly every attribute comes in: `h` is its first value.
_LIST = "type(vs := e.get('Value')) is list"
# Text: a str, or pydicom's UID (a str that the folder archive's datasets hold): neither changes what
# str() gives, so `h.strip()` is the `str(h).strip()` of the transforms' general case (dj.text).
_TEXT = "(type(h := vs[0]) is str or type(h) is UID)"
_ONE_STRING = f"{_LIST} and vs and {_TEXT}"  # the first value text
_ONLY_STRING = f"{_LIST} and len(vs) == 1 and {_TEXT}"  # one value, text
_ONE_DICT = f"{_LIST} and len(vs) == 1 and type(h := vs[0]) is dict"  # one value, a person name
_TRIMMED = "(h := h.strip())"  # `h` trimmed, not empty
_TEXT_CONCEPT = "[{'text': h}]"
_ALPHABETIC = "type(a := h.get('Alphabetic')) is str and a.strip('^ ')"


class _Row:
    """One table row as the generator sees it: where its value goes and how its fallback is called."""

    def __init__(self, i: int, row: Row) -> None:
        self.i = i
        self.key, self.append, self.fn, self.tags, self.args, self.probe = row
        self.transform = next(t for t, f in TRANSFORMS.items() if f is self.fn)

    def store(self, expr: str) -> str:
        if self.append:
            return f"out.setdefault({self.key!r}, []).append({expr})"
        return f"out[{self.key!r}] = {expr}"

    @property
    def fallback(self) -> list[str]:
        """The row's transform, called as the interpreted mapper calls it."""
        i = self.i
        return [f"v = F{i}(ds, T{i}, A{i}, ctx)", "if v is not None:", f"    {self.store('v')}"]


def _indent(lines: list[str], by: int = 1) -> list[str]:
    return ["    " * by + line for line in lines]


def _first_text(var: str, tag: str) -> list[str]:
    """`var = dj.first_text(ds, tag)`, its common case inline."""
    return [
        f"e = get({tag!r})",
        "if e is None:",
        f"    {var} = None",
        f"elif {_ONE_STRING} and ({var} := h.strip()):",
        "    pass",
        "else:",
        f"    {var} = first_text(ds, {tag!r})",
    ]


class _Recorder(MappingContext):
    """A MappingContext that keeps what a transform reports, to be reported again on each real one."""

    __slots__ = ("reports",)

    def __init__(self, ctx: MappingContext) -> None:
        super().__init__(ctx.trust, ctx.terminology, ctx.subject, ctx.study_uid, [])
        self.study_offset = ctx.study_offset
        self.reports: list[tuple[str, str, str]] = []

    def report(self, element: str, message: str, severity: str = "warning") -> None:
        self.reports.append((element, message, severity))


MEMO_SIZE = 4096  # entries per remembered row, then it starts again


def remembered(memo: dict[Any, Any], key: Any, fn: Any, ds: Any, tags: Any, args: Any, ctx: MappingContext) -> Any:
    """`fn(ds, tags, args, ctx)` for a dataset whose values that `fn` reads are all in `key`: computed
    once per key (what it reports is kept and reported again each time); a list comes back as a copy."""
    found = memo.get(key)
    if found is None:
        recorder = _Recorder(ctx)
        found = (fn(ds, tags, args, recorder), tuple(recorder.reports))
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[key] = found
    value, reports = found
    for report in reports:
        ctx.report(*report)
    return list(value) if type(value) is list else value


_CODE_ITEM = (dj.CODE_VALUE, dj.CODING_SCHEME_DESIGNATOR, dj.CODE_MEANING)


def code_item_key(item: dict[str, Any]) -> tuple[str, ...] | None:
    """(code, scheme, meaning) of a code sequence item that holds them, each one string, and nothing else."""
    if len(item) != len(_CODE_ITEM):
        return None
    key = []
    for tag in _CODE_ITEM:
        element = item.get(tag)
        if type(element) is not dict or type(vs := element.get("Value")) is not list or len(vs) != 1:
            return None
        if type(text := vs[0]) is not str:
            return None
        key.append(text)
    return tuple(key)


def _normalised(table: dict[str, Any], normalise: Callable[[str], str], expression: str) -> str:
    """How the fast path looks `h` up in a table the transform looks its normal form up in (`normalise`,
    written as `expression`): `h` itself when every key is in normal form, since then a term found is
    its own normal form (and a term not found goes to the transform)."""
    return "h" if all(normalise(key) == key for key in table) else expression


def _on_first_value(row: _Row, condition: str, value: str) -> list[str]:
    """The row's first attribute read once: `value` when `condition` holds (its common case), else the
    transform; nothing when the attribute is absent (the rows with a probe, and rows that map nothing
    from an absent attribute)."""
    return [
        f"e = get({row.tags[0]!r})",
        "if e is not None:",
        f"    if {condition}:",
        f"        {row.store(value)}",
        "    else:",
        *_indent(row.fallback, 2),
    ]


def _inline(row: _Row, terminology: Terminology, namespace: dict[str, Any]) -> list[str] | None:
    """The lines of a row with its common case inline; None when the row is best left to its transform."""
    name, tags, i = row.transform, row.tags, row.i
    single = len(tags) == 1 or row.probe is not None
    if name == "constant":
        value = row.args["value"]
        if value is None:
            return []
        namespace[f"C{i}"] = value
        return [row.store(repr(value) if type(value) in (str, int, bool) else f"C{i}")]
    if name == "subject_reference":
        return ["if ctx.subject is not None:", f"    {row.store('ctx.subject')}"]
    if name == "trust_endpoints":
        return [row.store("list(trust.study_endpoints)")]
    if name == "string" and single:
        return _on_first_value(row, f"{_ONLY_STRING} and {_TRIMMED}", "h")
    if name == "unsigned_int" and single:
        return _on_first_value(row, f"{_LIST} and vs and type(h := vs[0]) is int and 0 <= h <= {MAX_UNSIGNED}", "h")
    if name == "uid" and single:
        return _on_first_value(row, f"{_ONE_STRING} and {_TRIMMED} and is_uid(h)", "h")
    if name == "study_uid_identifier" and tags[0] == dj.STUDY_INSTANCE_UID:
        # StudyMapper.map_study calls the study's fields only once it holds a valid StudyInstanceUID: ctx.study_uid.
        namespace["DICOM_UID"] = systems.DICOM_UID
        return [row.store(f"{{'system': DICOM_UID, 'value': {systems.OID_PREFIX!r} + ctx.study_uid}}")]
    if name == "accession_identifier" and single:
        return _accession(row, namespace)
    if name == "study_id_identifier" and single:
        namespace["STUDY_ID_TYPE"] = STUDY_ID_TYPE
        value = "{'use': 'secondary', 'type': STUDY_ID_TYPE, 'value': h, 'assigner': trust.organization_reference}"
        return _on_first_value(row, f"{_ONE_STRING} and {_TRIMMED}", value)
    if name == "modality_coding" and single:
        namespace["MODALITIES"] = terminology.modalities
        return _on_first_value(row, f"{_ONE_STRING} and (c := MODALITIES.get(h)) is not None", "c")
    if name == "modality_codings" and single:
        namespace["MODALITIES"] = terminology.modalities
        return [
            f"e = get({tags[0]!r})",
            "if e is not None:",
            "    vs = e.get('Value')",
            "    if type(vs) is list and vs:",
            "        v = []",
            "        for h in vs:",
            "            if type(h) is not str or (c := MODALITIES.get(h)) is None:",
            f"                v = F{i}(ds, T{i}, A{i}, ctx)",
            "                break",
            "            if c not in v:",
            "                v.append(c)",
            "        if v is not None:",
            f"            {row.store('v')}",
            "    else:",
            *_indent(row.fallback, 2),
        ]
    if name == "body_site" and single:
        namespace["BODY_SITES"] = terminology.body_sites
        term = _normalised(terminology.body_sites, lambda k: k.upper().replace(" ", ""), "h.upper().replace(' ', '')")
        return _on_first_value(row, f"{_ONE_STRING} and {_TRIMMED} and (c := BODY_SITES.get({term})) is not None", "c")
    if name == "person_reference" and single:
        namespace["person_reference_of"] = person_reference_of
        return _on_first_value(row, f"{_ONE_DICT} and {_ALPHABETIC}", "person_reference_of(a)")
    if name == "person_references" and single:
        return _people(row, namespace)
    if name == "location_reference" and tags:
        words = [f"w{n}" for n in range(len(tags))]
        display = "{'display': ', '.join([w for w in (" + ", ".join(words) + ",) if w])}"
        return [
            *(line for n, t in enumerate(tags) for line in _first_text(words[n], t)),
            f"if {' or '.join(words)}:",
            f"    {row.store(display)}",
        ]
    if name == "reason_concepts" and len(tags) == 2:
        # no code sequence and one reason as text: [{'text': reason}]
        return [
            f"if {tags[1]!r} not in ds:",
            f"    e = get({tags[0]!r})",
            "    if e is not None:",
            f"        if {_ONLY_STRING} and {_TRIMMED}:",
            f"            {row.store(_TEXT_CONCEPT)}",
            "        else:",
            *_indent(row.fallback, 3),
            "else:",
            *_indent(row.fallback),
        ]
    if name == "laterality" and tags:
        namespace["LATERALITY"] = terminology.laterality
        found = f"(c := LATERALITY.get({_normalised(terminology.laterality, str.upper, 'h.upper()')})) is not None"
        others = " or ".join(f"((e := get({t!r})) and e.get('Value'))" for t in tags[1:])
        return [
            f"e = get({tags[0]!r})",
            "if e and (vs := e.get('Value')):",
            f"    if type(vs) is list and {_TEXT} and {_TRIMMED} and {found}:",
            f"        {row.store('c')}",
            "    else:",
            *_indent(row.fallback, 2),
            *([f"elif {others}:", *_indent(row.fallback)] if others else []),
        ]
    if name == "date_time" and len(tags) in (2, 3):
        namespace.update(datetime_or_problem=datetime_or_problem, PROBLEM=PROBLEM)
        offset = "offset or ctx.study_offset" if len(tags) > 2 else "ctx.study_offset"
        return [
            *_first_text("da", tags[0]),
            *_first_text("tm", tags[1]),
            *(_first_text("offset", tags[2]) if len(tags) > 2 else []),
            f"v = datetime_or_problem(da, tm, {offset}, trust.zone)",
            "if v is PROBLEM:",
            *_indent(row.fallback),
            "elif v is not None:",
            f"    {row.store('v')}",
        ]
    if name == "code_sequence_concepts" and single:
        # one coded item (code, scheme, meaning): the concept and what is reported, once per item
        namespace.update(remembered=remembered, code_item_key=code_item_key, **{f"M{i}": {}})
        one_item = "type(vs := e.get('Value')) is list and len(vs) == 1 and type(h := vs[0]) is dict"
        return [
            f"e = get({tags[0]!r})",
            "if e is not None:",
            f"    if {one_item} and (k := code_item_key(h)) is not None:",
            f"        v = remembered(M{i}, k, F{i}, ds, T{i}, A{i}, ctx)",
            "    else:",
            f"        v = F{i}(ds, T{i}, A{i}, ctx)",
            "    if v is not None:",
            f"        {row.store('v')}",
        ]
    if name == "performers":
        return _performers(row, namespace)
    return None


def _each_person(tag: str, append: str) -> list[str]:
    """`append` (an expression of `a`) for each value of the attribute, each a person name with its
    alphabetic group; `slow` set on any other value."""
    return [
        f"e = get({tag!r})",
        "if e is not None:",
        "    if type(vs := e.get('Value')) is list:",
        "        for h in vs:",
        f"            if type(h) is dict and {_ALPHABETIC}:",
        f"                {append}",
        "            else:",
        "                slow = True",
        "                break",
        "    elif vs:",
        "        slow = True",
    ]


def _people(row: _Row, namespace: dict[str, Any]) -> list[str]:
    """person_references: person names with their alphabetic group inline; anything else, the transform."""
    namespace["person_reference_of"] = person_reference_of
    return [
        "p = []",
        "slow = False",
        *_each_person(row.tags[0], "p.append(person_reference_of(a))"),
        "if slow:",
        *_indent(row.fallback),
        "elif p:",
        f"    {row.store('p')}",
    ]


def _performers(row: _Row, namespace: dict[str, Any]) -> list[str]:
    """Each attribute absent or person names with their alphabetic group: inline; else the transform."""
    lines = ["p = []", "slow = False"]
    for n, tag in enumerate(row.tags):
        namespace[f"R{row.i}_{n}"] = row.args["functions"][n]
        lines += _each_person(tag, f"p.append({{'function': R{row.i}_{n}, 'actor': person_reference_of(a)}})")
    namespace["person_reference_of"] = person_reference_of
    return [*lines, "if slow:", *_indent(row.fallback), "elif p:", f"    {row.store('p')}"]


def _accession(row: _Row, namespace: dict[str, Any]) -> list[str]:
    """One accession number, without an issuer or with one naming a trust (LocalNamespaceEntityID) alone."""
    namespace["ACCESSION_TYPE"] = ACCESSION_TYPE
    value = "{'use': 'usual', 'type': ACCESSION_TYPE, 'system': system, 'value': h, 'assigner': assigner}"
    local = "type(vs := s.get('Value')) is list and vs and type(s := vs[0]) is str and (s := s.strip())"
    issuer = [] if len(row.tags) == 1 else [
        f"    s = get({row.tags[1]!r})",
        "    if s is None:",
        "        pass",
        "    elif (type(vs := s.get('Value')) is list and len(vs) == 1 and type(s := vs[0]) is dict and len(s) == 1",
        f"          and (s := s.get({dj.LOCAL_NAMESPACE_ENTITY_ID!r})) is not None and {local}):",
        "        system, assigner = trust.issuers.get(s) or (system, assigner)",
        "    else:",
        "        system = None",
    ]  # fmt: skip
    return [
        f"e = get({row.tags[0]!r})",
        "if e is not None:",
        "    v = None",
        f"    if {_ONLY_STRING} and {_TRIMMED}:",
        "        system, assigner = trust.accession_system, trust.organization_reference",
        *_indent(issuer),
        "        if system is not None:",
        f"            v = {value}",
        "    if v is None:",
        f"        v = F{row.i}(ds, T{row.i}, A{row.i}, ctx)",
        "    if v is not None:",
        f"        {row.store('v')}",
    ]


def _function(
    name: str, rows: tuple[Row, ...], offset: int, terminology: Terminology, namespace: dict[str, Any]
) -> str:
    lines = [f"def {name}(ds, ctx, out):", "    get = ds.get", "    trust = ctx.trust"]
    for n, compiled in enumerate(rows):
        row = _Row(offset + n, compiled)
        i = row.i
        namespace[f"F{i}"], namespace[f"T{i}"], namespace[f"A{i}"] = row.fn, row.tags, row.args
        lines.append(f"    # {row.args['element']}: {row.transform}({', '.join(row.tags)})")
        body = _inline(row, terminology, namespace)
        if body is None:
            body = row.fallback
            if row.probe is not None:
                body = [f"if {row.probe!r} in ds:", *_indent(body)]
            elif row.tags and row.transform in _NOTHING_WHEN_ABSENT:
                body = [f"if {' or '.join(f'{t!r} in ds' for t in row.tags)}:", *_indent(body)]
        lines += _indent(body)
    lines.append("    return out")
    return "\n".join(lines)


def generate(
    study: tuple[Row, ...], series: tuple[Row, ...], instance: tuple[Row, ...], terminology: Terminology
) -> tuple[str, dict[str, Any]]:
    """The generated module's source and the namespace its names refer to (transforms, tags, args)."""
    namespace: dict[str, Any] = {"first_text": dj.first_text, "is_uid": dj.is_uid, "UID": UID}
    parts = [
        '"""Generated by app.core.mapping.compile from mappings/imagingstudy.yaml; do not edit."""',
        _function("map_study_fields", study, 0, terminology, namespace),
        _function("map_series_fields", series, 100, terminology, namespace),
        _function("map_instance_fields", instance, 200, terminology, namespace),
    ]
    return "\n\n\n".join(parts) + "\n", namespace


def compile_fields(
    study: tuple[Row, ...], series: tuple[Row, ...], instance: tuple[Row, ...], terminology: Terminology
) -> tuple[Fields, Fields, Fields]:
    source, namespace = generate(study, series, instance, terminology)
    exec(compile(source, "<mappings/imagingstudy.yaml compiled>", "exec"), namespace)  # our own source, from the tables
    return namespace["map_study_fields"], namespace["map_series_fields"], namespace["map_instance_fields"]


def generated_source() -> str:
    """The source the facade runs for the tables in mappings/ (what `python -m app.core.mapping.compile` prints)."""
    from app.core.mapping.tables import load_mapper

    mapper = load_mapper(compiled=False)
    return generate(mapper.study_rows, mapper.series_rows, mapper.instance_rows, mapper.terminology)[0]


if __name__ == "__main__":
    sys.stdout.write(generated_source())

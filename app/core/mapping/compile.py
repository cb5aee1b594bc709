"""The mapping tables compiled into Python functions, once, at start-up.

The tables in mappings/ stay the single source of truth: this module turns their resolved rows
(engine.compile_rows) into the source of three functions, `map_study_fields`, `map_series_fields`
and `map_instance_fields`, each `(ds, ctx, out) -> out`, that do exactly what engine._apply does
with the same rows, without the per-row loop, and with the common case of the cheap transforms
written inline (one string value, an integer, a UID, a known modality code). Anything else, and
every report, goes through the named transform itself, so the compiled mapper and the interpreted
one give the same resources and the same issues (tests/mapping/test_compiled.py proves it on the
demo studies and on fuzzed datasets).

Inspect the generated source: `python -m app.core.mapping.compile` (or `generated_source()`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from app.core import dicom_json as dj
from app.core.mapping.context import MappingContext, Terminology
from app.core.mapping.dates import DateProblem, fhir_datetime
from app.core.mapping.engine import Row
from app.core.mapping.transforms import MAX_UNSIGNED, TRANSFORMS

Fields = Callable[[dj.Dataset, MappingContext, dict[str, Any]], dict[str, Any]]
SECTIONS = ("study", "series", "instance")


def _inline(name: str, i: int, terminology: Terminology, namespace: dict[str, Any]) -> list[str] | None:
    """Lines that set `v` for row i, the common case inline and the transform F{i} for the rest;
    None when the row is best left to its transform alone."""
    fallback = f"v = F{i}(ds, T{i}, A{i}, ctx)"
    if name == "constant":
        return [f"v = A{i}['value']"]
    if name == "subject_reference":
        return ["v = ctx.subject"]
    if name == "trust_endpoints":
        return ["v = list(ctx.trust.study_endpoints)"]
    if name == "string":
        return [
            f"it = ds.get(T{i}[0])",
            "if it is None:",
            "    v = None",
            "else:",
            "    vs = it.get('Value')",
            "    if vs and len(vs) == 1 and type(vs[0]) is str:",
            "        v = vs[0].strip() or None",
            "    else:",
            f"        {fallback}",
        ]
    if name == "unsigned_int":
        return [
            f"it = ds.get(T{i}[0])",
            "vs = it.get('Value') if it else None",
            "if not vs:",
            "    v = None",
            f"elif type(vs[0]) is int and 0 <= vs[0] <= {MAX_UNSIGNED}:",
            "    v = vs[0]",
            "else:",
            f"    {fallback}",
        ]
    if name == "uid":
        namespace["is_uid"] = dj.is_uid
        return [
            f"it = ds.get(T{i}[0])",
            "vs = it.get('Value') if it else None",
            "if vs and type(vs) is list and type(vs[0]) is str and (s := vs[0].strip()) and is_uid(s):",
            "    v = s",
            "elif not it:",
            "    v = None",
            "else:",
            f"    {fallback}",
        ]
    if name == "modality_coding":
        namespace["MODALITIES"] = terminology.modalities
        return [
            f"it = ds.get(T{i}[0])",
            "vs = it.get('Value') if it else None",
            "if vs and type(vs[0]) is str and vs[0] in MODALITIES:",
            "    v = MODALITIES[vs[0]]",
            "else:",
            f"    {fallback}",
        ]
    if name == "body_site":
        namespace["BODY_SITES"] = terminology.body_sites
        return [
            f"it = ds.get(T{i}[0])",
            "vs = it.get('Value') if it else None",
            "if (",
            "    vs and type(vs) is list and type(vs[0]) is str and (s := vs[0].strip())",
            "    and (c := BODY_SITES.get(s.upper().replace(' ', ''))) is not None",
            "):",
            "    v = c",
            "elif not it:",
            "    v = None",
            "else:",
            f"    {fallback}",
        ]
    if name == "laterality":
        namespace["LATERALITY"] = terminology.laterality
        return [
            f"it = ds.get(T{i}[0])",
            "vs = it.get('Value') if it else None",
            "if vs and type(vs) is list and type(vs[0]) is str and (s := vs[0].strip()) and s.upper() in LATERALITY:",
            "    v = LATERALITY[s.upper()]",
            f"elif all(not (e := ds.get(t)) or not e.get('Value') for t in T{i}):",
            "    v = None",
            "else:",
            f"    {fallback}",
        ]
    if name == "date_time":
        namespace.update(first_text=dj.first_text, fhir_datetime=fhir_datetime, DateProblem=DateProblem)
        return [
            "try:",
            f"    v = fhir_datetime(first_text(ds, T{i}[0]), first_text(ds, T{i}[1]),",
            f"                      (first_text(ds, T{i}[2]) if len(T{i}) > 2 else None) or ctx.study_offset,",
            "                      ctx.trust.zone)",
            "except DateProblem:",
            f"    {fallback}",
        ]
    return None


def _function(
    name: str, rows: tuple[Row, ...], offset: int, terminology: Terminology, namespace: dict[str, Any]
) -> str:
    lines = [f"def {name}(ds, ctx, out):"]
    for n, (key, append, fn, tags, args, probe) in enumerate(rows):
        i = offset + n
        namespace[f"F{i}"], namespace[f"T{i}"], namespace[f"A{i}"] = fn, tags, args
        transform = next(t for t, f in TRANSFORMS.items() if f is fn)
        body = _inline(transform, i, terminology, namespace) or [f"v = F{i}(ds, T{i}, A{i}, ctx)"]
        if append:
            store = ["if v is not None:", f"    out.setdefault({key!r}, []).append(v)"]
        else:
            store = ["if v is not None:", f"    out[{key!r}] = v"]
        lines.append(f"    # {args['element']}: {transform}({', '.join(tags)})")
        indent = "    "
        if probe is not None:
            lines.append(f"    if {probe!r} in ds:")
            indent = "        "
        lines += [indent + line for line in (*body, *store)]
    lines.append("    return out")
    return "\n".join(lines)


def generate(
    study: tuple[Row, ...], series: tuple[Row, ...], instance: tuple[Row, ...], terminology: Terminology
) -> tuple[str, dict[str, Any]]:
    """The generated module's source and the namespace its names refer to (transforms, tags, args)."""
    namespace: dict[str, Any] = {}
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

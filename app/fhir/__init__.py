"""The FHIR REST layer: search parameter parsing (pure), Bundles, cursors, views."""

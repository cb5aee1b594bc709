"""Demo data for the Greater Manchester imaging FHIR facade."""

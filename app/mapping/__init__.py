"""The pure DICOM -> FHIR core: no I/O, no Flask, no HTTP. Driven by the tables in mappings/."""

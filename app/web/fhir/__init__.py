"""app/web/fhir"""

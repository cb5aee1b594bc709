"""app/telemetry"""

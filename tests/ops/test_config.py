"""The `ops` section of the configuration: every mistake stops start-up with the key named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import ConfigError, OpsSettings, settings_from_document

ROOT = Path(__file__).resolve().parents[2]


def _problems(doc: dict[str, Any], demo_data: Path, ops: Any) -> list[str]:
    doc["ops"] = ops
    with pytest.raises(ConfigError) as raised:
        settings_from_document(doc, demo_data)
    return raised.value.problems


def test_ops_defaults_when_the_section_is_absent(ops_document, demo_data):
    del ops_document["ops"]
    assert settings_from_document(ops_document, demo_data).ops == OpsSettings(
        metrics_allow=("127.0.0.0/8", "::1/128"),
        trusted_proxies=0,
        log_level="INFO",
        log_patient_data=False,
        gc_thresholds=(10000, 10, 10),
        probe_timeout_s=2.0,
        readiness_cache_s=5.0,
        archives_required="any",
        rate_limit=None,
    )


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ({"metric_allow": []}, "ops: unknown key 'metric_allow'"),
        ({"readiness": {"cache": 5}}, "ops.readiness: unknown key 'cache'"),
        ({"rate_limit": {"requests_per_minute": 60, "bursts": 5}}, "ops.rate_limit: unknown key 'bursts'"),
        ({"rate_limit": {"burst": 5}}, "ops.rate_limit.requests_per_minute: required key is missing"),
        (
            {"rate_limit": {"requests_per_minute": 0}},
            "ops.rate_limit.requests_per_minute: 0 is less than the minimum of 1",
        ),
        (
            {"rate_limit": {"requests_per_minute": 60, "store": "memcached://x"}},
            "ops.rate_limit.store: 'memcached://x' does not match",
        ),
        ({"log_level": "VERBOSE"}, "ops.log_level: 'VERBOSE' is not one of"),
        ({"log_patient_data": "yes"}, "ops.log_patient_data: 'yes' is not of type 'boolean'"),
        ({"readiness": {"archives_required": "most"}}, "ops.readiness.archives_required: 'most' is not one of"),
        (
            {"readiness": {"probe_timeout_s": 0}},
            "ops.readiness.probe_timeout_s: 0 is less than or equal to the minimum of 0",
        ),
        ({"metrics_allow": ["10.0.0.1/8"]}, "ops.metrics_allow[0]: 10.0.0.1/8 has host bits set"),
        (
            {"metrics_allow": ["127.0.0.1", "localhost"]},
            "ops.metrics_allow[1]: 'localhost' does not appear to be an IPv4 or IPv6 network",
        ),
        ("on", "ops: 'on' is not of type 'object'"),
    ],
)
def test_ops_mistake_is_named(ops_document, demo_data, ops, expected):
    problems = _problems(ops_document, demo_data, ops)
    assert any(p.startswith(expected) for p in problems), problems


def test_ops_mistake_stops_serve_naming_the_key(ops_document, tmp_path):
    ops_document["ops"] = {"rate_limit": {"requests_per_minut": 60}}
    path = tmp_path / "facade.yaml"
    path.write_text(yaml.safe_dump(ops_document), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--config", str(path), "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "ops.rate_limit: unknown key 'requests_per_minut'" in done.stderr

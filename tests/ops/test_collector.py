"""A server process settles its garbage collector after start-up (app.ops.collector, `ops.gc_thresholds`):
wsgi.py and `python -m app serve` build the app with serving_app; create_app alone (tests, tools) leaves
the interpreter's collector as it is."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import create_app, serving_app
from app.settings import settings_from_document

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_serving_app_freezes_start_up_objects_and_sets_the_thresholds(
    ops_document: dict[str, Any], demo_data: Path, restored_collector: None
) -> None:
    ops_document["ops"] = {"gc_thresholds": [5000, 7, 9]}
    settings = settings_from_document(ops_document, demo_data)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    create_app(settings)
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
    app = serving_app(settings)
    assert gc.get_threshold() == (5000, 7, 9)
    assert gc.get_freeze_count() > 10_000  # the app, its modules and tables: out of the collector's way
    assert app.test_client().get("/healthz").status_code == 200


def test_the_wsgi_entry_point_serves_with_the_configured_collector(
    ops_document: dict[str, Any], tmp_path: Path
) -> None:
    ops_document["ops"] = {"gc_thresholds": [12345, 10, 10]}
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(ops_document), encoding="utf-8")
    probe = "import gc, wsgi; print(gc.get_threshold(), gc.get_freeze_count() > 10000)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={"FACADE_CONFIG": str(config), "FACADE_CURSOR_SECRET": "x" * 32, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "(12345, 10, 10) True"


def test_a_wrong_threshold_list_is_named(ops_document: dict[str, Any], demo_data: Path) -> None:
    from app.settings import ConfigError

    ops_document["ops"] = {"gc_thresholds": [700, 10]}
    with pytest.raises(ConfigError) as raised:
        settings_from_document(ops_document, demo_data)
    assert any(p.startswith("ops.gc_thresholds: [700, 10] is too short") for p in raised.value.problems), (
        raised.value.problems
    )

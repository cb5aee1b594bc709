"""Every demo series opens through the facade's token-protected image gateway (the demo's embedded
folder archives): metadata, and the stored frames with their sizes and content type
(tests/gateway/series_walk.py). tests/federation/test_demo_series_orthanc.py walks the same series
in real Orthanc archives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smart_tokens import system_token

from tests.gateway.series_walk import walk
from tools.demo.generate import SOP_CLASS_BY_MODALITY


def test_every_demo_series_opens_through_the_gateway(app: Any, demo_data: Path, manifest: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {system_token(app)}"}
    opened = walk(app.test_client(), headers, demo_data)
    assert set(opened) == set(SOP_CLASS_BY_MODALITY)
    held = sum(h["series"] for p in manifest["patients"] for s in p["studies"] for h in s["holdings"].values())
    assert sum(opened.values()) == held

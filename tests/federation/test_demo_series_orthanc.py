"""Every demo series opens through the facade's token-protected image gateway when the trusts'
archives are real Orthancs (DICOMweb plugin) loaded with the demo dataset: metadata, and the stored
frames with their sizes and content type (tests/gateway/series_walk.py, which tests/demo also runs
over the embedded folder archives)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from smart_tokens import system_token

from tests.federation.conftest import BuildFacade
from tests.gateway.series_walk import walk
from tools.demo.generate import SOP_CLASS_BY_MODALITY

pytestmark = pytest.mark.integration


def test_every_demo_series_opens_through_the_gateway_from_orthanc(
    build_facade: BuildFacade, demo_data: Path, manifest: dict[str, Any]
) -> None:
    app = build_facade().app
    headers = {"Authorization": f"Bearer {system_token(app)}", "Accept-Encoding": "identity"}
    opened = walk(app.test_client(), headers, demo_data)
    assert set(opened) == set(SOP_CLASS_BY_MODALITY)
    held = sum(h["series"] for p in manifest["patients"] for s in p["studies"] for h in s["holdings"].values())
    assert sum(opened.values()) == held

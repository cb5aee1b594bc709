"""Fixtures for the archive tests (helpers in support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.archives.support import DicomWebService, PixService
from tests.infra import serve_wsgi


@pytest.fixture()
def dicomweb_service() -> Iterator[DicomWebService]:
    service = DicomWebService()
    with serve_wsgi(service) as origin:
        service.url = f"{origin}/dicom-web"
        yield service


@pytest.fixture()
def pix_service() -> Iterator[PixService]:
    service = PixService()
    with serve_wsgi(service) as origin:
        service.url = f"{origin}/fhir"
        yield service

"""P3: mapping CPU per study (DICOM JSON -> FHIR JSON, series included), target <= 20 us.

Input: every study of the generated demo dataset, as the folder archive answers a search
(study-level DICOM JSON plus all its series), mapped as the search path maps them. Measured with
process CPU time over several passes; the median pass is reported. Also shows, for context,
the cost of serialising with orjson and of validating through the fhir.resources models.

Run: python -m bench.mapping_cpu
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from app.archives.folder.archive import FolderArchive
from app.core.mapping.context import TrustMapping
from app.core.mapping.patient import subject_reference
from app.core.mapping.tables import load_mapper
from app.core.query import StudyQuery
from bench.results import write_section
from tools.demo.generate import TRUSTS, ensure_demo_data

TARGET_US = 20.0
PASSES = 15


def load_inputs(data: Path) -> list[tuple[dict, list[dict], TrustMapping, dict]]:
    zone = ZoneInfo("Europe/London")
    inputs = []
    for trust in TRUSTS:
        archive = FolderArchive(trust.id, data / trust.id)
        mapping = TrustMapping(
            trust.id,
            trust.ods_code,
            trust.name,
            f"https://fhir.nhs.uk/{trust.ods_code}/Id/accession-number",
            zone,
            f"{trust.id}-wado-rs",
        )
        everything = StudyQuery()
        series_by_study = defaultdict(list)
        for series in archive.find_series(everything).datasets:
            series_by_study[series["0020000D"]["Value"][0]].append(series)
        for study in archive.find_studies(everything).datasets:
            uid = study["0020000D"]["Value"][0]
            subject = subject_reference(None, study, "urn:local")
            inputs.append((study, series_by_study[uid], mapping, subject))
    return inputs


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="bench-demo-")) / "demo-data"
    ensure_demo_data(data)
    inputs = load_inputs(data)
    mapper = load_mapper()
    series_count = sum(len(s) for _, s, _, _ in inputs)
    passes = []
    for _ in range(PASSES):
        start = time.process_time()
        for study, series, trust, subject in inputs:
            mapper.map_study(study, series, None, trust, subject, [])
        passes.append((time.process_time() - start) / len(inputs) * 1e6)
    mapped = [mapper.map_study(s, se, None, t, sub, []) for s, se, t, sub in inputs]
    start = time.process_time()
    for _ in range(PASSES):
        for resource in mapped:
            orjson.dumps(resource)
    dumps_us = (time.process_time() - start) / PASSES / len(mapped) * 1e6
    from fhir.resources.R4B.imagingstudy import ImagingStudy

    sample = mapped[:100]
    start = time.process_time()
    for resource in sample:
        ImagingStudy.model_validate(resource).model_dump_json()
    model_us = (time.process_time() - start) / len(sample) * 1e6
    median = statistics.median(passes)
    verdict = "met" if median <= TARGET_US else "NOT met"
    table = (
        f"| measure | value |\n|---|---|\n"
        f"| studies mapped per pass | {len(inputs)} ({series_count / len(inputs):.1f} series per study on average) |\n"
        f"| **P3 mapping CPU per study, median of {PASSES} passes** | **{median:.1f} us** "
        f"(min {min(passes):.1f}, max {max(passes):.1f}); target <= {TARGET_US:g} us: {verdict} |\n"
        f"| orjson serialisation per study | {dumps_us:.1f} us |\n"
        f"| for context: fhir.resources R4B validate + serialise per study | {model_us:.0f} us |\n"
    )
    print(write_section("P3 mapping CPU per study", table))


if __name__ == "__main__":
    main()

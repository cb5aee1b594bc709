"""One format for the facts a clinician reads, server side and client side alike.

The authorization server's pages format with app/core/display.py; the sample apps with its twin
app/web/static/apps/shared/format.js. Both are run here on the same inputs (the JavaScript under
Node, as the browser loads it: a plain script) and must give the same text, and the text the issue
asks for (23-Dec-1952, 943 476 5919, FAMILY, Given).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.core import display

ROOT = Path(__file__).resolve().parents[2]
FORMAT_JS = ROOT / "app" / "web" / "static" / "apps" / "shared" / "format.js"

DATES = [
    "1952-12-23",
    "1966-02-21",
    "2020-03",
    "1999",
    "",
    None,
    "23/12/1952",
    "2020-13-01",
    "2020-03-01T10:15:00Z",
    "2020-07-01T10:15:00Z",
    "2020-07-01T23:30:00+00:00",
    "2016-05-04T09:07:00",
    "2019-10-27T01:30:00Z",
    "2021-01-31T23:59:59.123-05:00",
]
NHS_NUMBERS = ["9434765919", "943 476 5919", " 9434765919 ", "12345", "", None, "94347659190"]
NAMES: list[Any] = [
    {"family": "Ali", "given": ["Mohammed"], "text": "MOHAMMED ALI"},
    {"family": "ALI", "given": ["RAJESH"]},
    {"family": "o'brien", "given": ["mary-jane", "ann"]},
    {"family": "Smith"},
    {"given": ["Joan"]},
    {"text": "Dr Who"},
    {"family": "Müller", "given": ["jürgen"]},
    {},
    None,
]
GENDERS = ["female", "male", "other", "unknown", "", None, "nonbinary"]


def _python() -> dict[str, list[str]]:
    return {
        "formatDate": [display.format_date(v) for v in DATES],
        "formatDateTime": [display.format_datetime(v) for v in DATES],
        "formatNhsNumber": [display.format_nhs_number(v) for v in NHS_NUMBERS],
        "formatName": [display.format_name(v) for v in NAMES],
        "formatGender": [display.format_gender(v) for v in GENDERS],
    }


def _javascript() -> dict[str, list[str]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js 20) is needed to run app/web/static/apps/shared/format.js")
    script = (
        "const f = require(process.argv[1]); const inputs = JSON.parse(process.argv[2]);"
        "const out = {}; for (const [fn, values] of Object.entries(inputs)) out[fn] = values.map((v) => f[fn](v));"
        "process.stdout.write(JSON.stringify(out));"
    )
    inputs = {
        "formatDate": DATES,
        "formatDateTime": DATES,
        "formatNhsNumber": NHS_NUMBERS,
        "formatName": NAMES,
        "formatGender": GENDERS,
    }
    done = subprocess.run(
        [node, "-e", script, str(FORMAT_JS), json.dumps(inputs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"TZ": "America/New_York", "PATH": "/usr/bin:/bin"},  # the UK time must not depend on the machine's
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_server_and_client_format_the_same_facts_alike():
    python, javascript = _python(), _javascript()
    for fn, values in python.items():
        assert javascript[fn] == values, f"{fn}: JS {javascript[fn]} != Python {values}"


def test_the_formats_are_the_ones_clinicians_read():
    assert display.format_date("1952-12-23") == "23-Dec-1952"
    assert display.format_date("2020-03") == "Mar-2020"
    assert display.format_date(None) == "Not recorded"
    assert display.format_date("23/12/1952") == "23/12/1952"  # shown as it is, never dropped
    assert display.format_datetime("2020-07-01T10:15:00Z") == "01-Jul-2020 11:15"  # BST
    assert display.format_datetime("2020-03-01T10:15:00Z") == "01-Mar-2020 10:15"  # GMT
    assert display.format_datetime("2021-01-31T23:59:59.123-05:00") == "01-Feb-2021 04:59"
    assert display.format_date("2021-01-31T23:59:59.123-05:00") == "01-Feb-2021"
    assert display.format_nhs_number("9434765919") == "943 476 5919"
    assert display.format_name({"family": "Ali", "given": ["Mohammed"], "text": "MOHAMMED ALI"}) == "ALI, Mohammed"
    assert display.format_name({"family": "o'brien", "given": ["mary-jane", "ann"]}) == "O'BRIEN, Mary-Jane Ann"
    assert display.format_gender("female") == "Female"

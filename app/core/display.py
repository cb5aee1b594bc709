"""How a person reads the facts of a patient and a study: one format for every page of the facade.

The authorization server's pages (patient picker, consent, the EHR launch simulator) use these
functions; the sample apps use their twin in app/web/static/apps/shared/format.js, and
tests/e2e/test_display_formats.py checks that both give the same text for the same inputs.

    dates       NHS style, two-digit day: 23-Dec-1952 (Dec-1952, 1952 for partial dates); a
                dateTime with an offset is shown in UK time, 01-Mar-2020 10:15
    NHS number  spaced 3-3-4: 943 476 5919
    names       FAMILY, Given Other (family name in capitals, given names capitalised)
    sex         Female, Male, Other, Unknown; "Not recorded" when absent

A value that is not what its format expects is shown as it is, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
UK = ZoneInfo("Europe/London")
NOT_RECORDED = "Not recorded"
_DATE = re.compile(r"\A(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?\Z")
_DATETIME = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?\Z")
_WORD_START = " -'"
GENDERS = {"female": "Female", "male": "Male", "other": "Other", "unknown": "Unknown"}


def format_date(value: str | None) -> str:
    """A FHIR date (or the date of a dateTime) as 23-Dec-1952; "Not recorded" when empty."""
    if not value:
        return NOT_RECORDED
    if _DATETIME.match(value):
        return format_datetime(value).split(" ")[0]
    match = _DATE.match(value)
    if not match:
        return value
    year, month, day = match.groups()
    if month is None:
        return year
    if not 1 <= int(month) <= 12:
        return value
    return f"{day}-{MONTHS[int(month) - 1]}-{year}" if day else f"{MONTHS[int(month) - 1]}-{year}"


def format_datetime(value: str | None) -> str:
    """A FHIR dateTime as 01-Mar-2020 10:15 (UK time when it has an offset), a date as format_date."""
    if not value:
        return NOT_RECORDED
    match = _DATETIME.match(value)
    if not match:
        return format_date(value)
    year, month, day, hour, minute, _second, offset = match.groups()
    if offset:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UK)
        except ValueError:
            return value
        year, month, day = f"{moment.year:04d}", f"{moment.month:02d}", f"{moment.day:02d}"
        hour, minute = f"{moment.hour:02d}", f"{moment.minute:02d}"
    date = format_date(f"{year}-{month}-{day}")
    return f"{date} {hour}:{minute}"


def format_nhs_number(value: str | None) -> str:
    """Ten digits as 943 476 5919; anything else as it is."""
    digits = re.sub(r"\s+", "", value or "")
    return f"{digits[:3]} {digits[3:6]} {digits[6:]}" if re.fullmatch(r"\d{10}", digits) else digits


def _capitalised(word: str) -> str:
    out = []
    previous = " "
    for char in word.lower():
        out.append(char.upper() if previous in _WORD_START else char)
        previous = char
    return "".join(out)


def format_name(name: Mapping[str, Any] | None) -> str:
    """A FHIR HumanName as FAMILY, Given Other; its text when it has no parts; "" when none."""
    if not name:
        return ""
    family = str(name.get("family") or "").strip()
    given = " ".join(_capitalised(str(g).strip()) for g in name.get("given") or [] if str(g).strip())
    if family and given:
        return f"{family.upper()}, {given}"
    if family or given:
        return family.upper() or given
    return str(name.get("text") or "").strip()


def format_gender(value: str | None) -> str:
    """A FHIR administrative gender as a word for the page."""
    if not value:
        return NOT_RECORDED
    return GENDERS.get(value, value)

"""DICOM DA/TM/TimezoneOffsetFromUTC -> FHIR dateTime, keeping the precision DICOM gave.

FHIR requires a zone whenever a time is present. When the archive sends no
TimezoneOffsetFromUTC we use the trust's local zone (Europe/London by default) for that date,
which is what every GM modality clock runs on; the choice is documented in the README.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache

_DATE = re.compile(r"^(\d{4})(?:\.?(\d{2})(?:\.?(\d{2}))?)?$")
_TIME = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")


class DateProblem(ValueError):
    """A DICOM date or time that cannot be read; its message says which value and why."""


def fhir_date(da: str) -> str:
    """``20240305`` -> ``2024-03-05``; ``202403`` -> ``2024-03``; legacy ``2024.03.05`` accepted."""
    match = _DATE.match(da.strip())
    if not match:
        raise DateProblem(f"{da!r} is not a DICOM date (YYYYMMDD)")
    year, month, day = match.groups()
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise DateProblem(f"{da!r} is not a calendar date") from None
    if int(year) < 1800:
        raise DateProblem(f"{da!r} is before 1800")
    return "-".join(p for p in (year, month, day) if p)


def _fhir_time(tm: str) -> tuple[str, int, int, int]:
    match = _TIME.match(tm.strip())
    if not match:
        raise DateProblem(f"{tm!r} is not a DICOM time (HHMMSS.FFFFFF)")
    hh, mm, ss, frac = match.groups()
    h, m, s = int(hh), int(mm or 0), int(ss or 0)
    if h > 23 or m > 59 or s > 60:  # 60: a leap second, valid in DICOM TM and FHIR time
        raise DateProblem(f"{tm!r} is not a time of day")
    text = f"{h:02d}:{m:02d}:{s:02d}" + (f".{frac}" if frac else "")
    return text, h, m, s


def _offset_text(offset: str) -> str:
    match = _OFFSET.match(offset.strip())
    # DICOM allows -1200..+1400; FHIR's zone pattern stops at 14:00 either way.
    if not match or int(match.group(3)) > 59 or int(match.group(2)) * 60 + int(match.group(3)) > 14 * 60:
        raise DateProblem(f"{offset!r} is not a UTC offset FHIR can hold (-14:00 to +14:00)")
    sign, hh, mm = match.groups()
    return f"{sign}{hh}:{mm}"


def _zone_offset_text(day: str, hms: tuple[int, int, int], zone: tzinfo) -> str:
    y, mo, d = (int(p) for p in day.split("-"))
    local = datetime(y, mo, d, hms[0], hms[1], min(hms[2], 59), tzinfo=zone)
    delta = local.utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def fhir_datetime(da: str | None, tm: str | None, offset: str | None, zone: tzinfo) -> str | None:
    """Combine DA, TM and offset into a FHIR dateTime; None when there is no date at all.

    A time is only kept with a full date (FHIR has no partial date with a time). Raises
    DateProblem naming the first unreadable value; the caller reports it and omits the element.
    The parts are cached separately: a study's series share its date, and zone offsets change
    only twice a year.
    """
    if not da:
        if tm:
            raise DateProblem(f"time {tm!r} has no date")
        return None
    day = _day(da)
    if not tm:
        return day
    if len(day) != 10:
        raise DateProblem(f"time {tm!r} given with a partial date {da!r}")
    time_text, h, m, _s = _time(tm)
    zone_text = _offset(offset) if offset else _zone_offset(day, h, m, zone)
    return f"{day}T{time_text}{zone_text}"


# What datetime_or_problem returns for values fhir_datetime cannot read (the caller reports them).
PROBLEM = object()


@lru_cache(maxsize=16384)
def datetime_or_problem(da: str | None, tm: str | None, offset: str | None, zone: tzinfo) -> str | None | object:
    """fhir_datetime, remembered (a small domain: studies share dates, times repeat), with PROBLEM
    in place of the DateProblem; the compiled mapper reads it and leaves problems to the transform."""
    try:
        return fhir_datetime(da, tm, offset, zone)
    except DateProblem:
        return PROBLEM


@lru_cache(maxsize=8192)
def _day(da: str) -> str:
    return fhir_date(da)


@lru_cache(maxsize=256)
def _offset(offset: str) -> str:
    return _offset_text(offset)


def _time(tm: str) -> tuple[str, int, int, int]:
    """The common forms HHMMSS and HHMMSS.FFFFFF without a regular expression; others by _fhir_time."""
    if (
        len(tm) >= 6
        and tm[:6].isdigit()
        and tm.isascii()
        and (len(tm) == 6 or (tm[6] == "." and 7 < len(tm) <= 13 and tm[7:].isdigit()))
    ):
        h, m, s = int(tm[:2]), int(tm[2:4]), int(tm[4:6])
        if h <= 23 and m <= 59 and s <= 60:
            frac = tm[7:]
            return f"{tm[:2]}:{tm[2:4]}:{tm[4:6]}" + (f".{frac}" if frac else ""), h, m, s
    return _fhir_time(tm.strip())


@lru_cache(maxsize=8192)
def _zone_offset(day: str, h: int, m: int, zone: tzinfo) -> str:
    """Per minute: zones change offset on minute boundaries."""
    return _zone_offset_text(day, (h, m, 0), zone)

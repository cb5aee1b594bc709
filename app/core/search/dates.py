"""FHIR date search semantics (R4 search.html#date): prefixes, precision ranges, comparison.

A date parameter value and a resource's date are both ranges, from the start of their precision
to its end. Pure: the zone to read zone-less values in is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_VALUE = re.compile(  # ASCII digits only ("\d" is any Unicode digit), \Z (not $: no final newline)
    r"^([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?\Z"
)


class DateValueError(ValueError):
    """A date parameter value that is not a FHIR date/dateTime."""


@dataclass(frozen=True)
class DateRange:
    """[start, end) in UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class DateFilter:
    prefix: str
    range: DateRange

    def matches(self, value: DateRange) -> bool:
        p, r = self.prefix, self.range
        if p == "eq":
            return r.start <= value.start and value.end <= r.end
        if p == "ne":
            return not (r.start <= value.start and value.end <= r.end)
        if p == "gt":
            return value.end > r.end
        if p == "lt":
            return value.start < r.start
        if p == "ge":
            return value.end > r.start
        if p == "le":
            return value.start < r.end
        if p == "sa":
            return value.start >= r.end
        return value.end <= r.start  # eb


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    return moment.replace(year=moment.year + month // 12, month=month % 12 + 1)


def parse_range(value: str, zone: tzinfo) -> DateRange:
    """The range a FHIR date/dateTime stands for; zone-less values are read in `zone`."""
    match = _VALUE.match(value)
    if not match:
        raise DateValueError(f"{value!r} is not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD, or with a time)")
    year, month, day, hh, mm, ss, frac, tz = match.groups()
    zone_used: tzinfo = zone
    try:
        if tz:  # timezone() refuses offsets of 24 hours or more
            zone_used = (
                timezone.utc
                if tz == "Z"
                else timezone((1 if tz[0] == "+" else -1) * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
            )
        start = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hh or 0),
            int(mm or 0),
            int(ss or 0),
            int((frac or "0")[:6].ljust(6, "0")),
            tzinfo=zone_used,
        )
    except ValueError:
        raise DateValueError(f"{value!r} is not a valid calendar date or time") from None
    try:
        if frac:
            end = start + timedelta(microseconds=1)
        elif ss:
            end = start + timedelta(seconds=1)
        elif hh:
            end = start + timedelta(minutes=1)
        elif day:
            end = start + timedelta(days=1)
        elif month:
            end = _add_months(start, 1)
        else:
            end = start.replace(year=start.year + 1)
        # One day inside the calendar's edges, so that any zone (and dicom_bounds' day of margin) stays in it.
        if not datetime(1, 1, 3, tzinfo=timezone.utc) <= start.astimezone(timezone.utc) or not end.astimezone(
            timezone.utc
        ) <= datetime(9999, 12, 30, tzinfo=timezone.utc):
            raise OverflowError
    except (ValueError, OverflowError):  # year 10000, or before year 1 in UTC
        raise DateValueError(
            f"{value!r} is outside the dates this server compares (0001-01-03 to 9999-12-30 UTC)"
        ) from None
    return DateRange(start.astimezone(timezone.utc), end.astimezone(timezone.utc))


def parse_filter(raw: str, zone: tzinfo) -> DateFilter:
    prefix = raw[:2] if raw[:2] in PREFIXES else "eq"
    value = raw[2:] if raw[:2] in PREFIXES else raw
    return DateFilter(prefix, parse_range(value, zone))


def dicom_bounds(filters: tuple[DateFilter, ...], zone: tzinfo) -> tuple[str | None, str | None]:
    """A StudyDate range (YYYYMMDD, inclusive) wide enough to hold every match; exact check later.

    One day of margin on each side covers any time zone a study date could be recorded in.
    """
    low: datetime | None = None
    high: datetime | None = None
    for f in filters:
        if f.prefix in ("eq", "ge", "gt", "sa"):
            low = max(low, f.range.start) if low else f.range.start
        if f.prefix in ("eq", "le", "lt", "eb"):
            high = min(high, f.range.end) if high else f.range.end
    day = timedelta(days=1)
    return (
        _dicom_date(low.astimezone(zone) - day) if low else None,
        _dicom_date(high.astimezone(zone) + day) if high else None,
    )


def _dicom_date(moment: datetime) -> str:
    """YYYYMMDD, the year always four digits (strftime's %Y does not pad years before 1000 on glibc)."""
    return f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"

"""DICOM DA/TM/TimezoneOffsetFromUTC -> FHIR date and dateTime (app/core/mapping/dates.py)."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pytest

from app.core.mapping.dates import DateProblem, fhir_date, fhir_datetime

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")

# The regexes of the FHIR R4 primitive types (hl7.org/fhir/R4/datatypes.html).
FHIR_DATE = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"
)
FHIR_DATETIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)


@pytest.mark.parametrize(
    ("da", "expected"),
    [
        ("20240305", "2024-03-05"),
        ("20240229", "2024-02-29"),
        ("18000101", "1800-01-01"),
        ("2024.03.05", "2024-03-05"),
        ("2024", "2024"),
        ("202403", "2024-03"),
        ("2024.03", "2024-03"),
        (" 20240305 ", "2024-03-05"),
    ],
    ids=["full", "leap-day", "year-1800", "legacy-dotted", "year-only", "year-month", "legacy-year-month", "padded"],
)
def test_fhir_date_valid(da: str, expected: str) -> None:
    assert fhir_date(da) == expected
    assert FHIR_DATE.fullmatch(expected)


@pytest.mark.parametrize(
    "da",
    [
        "20231345",
        "20230230",
        "20230229",
        "20230132",
        "2023023",
        "abcd",
        "",
        "2024-03-05",
        "24",
        "202403051",
        "17991231",
        "2024/03/05",
    ],
    ids=[
        "month-13",
        "feb-30",
        "feb-29-not-leap",
        "jan-32",
        "seven-digits",
        "letters",
        "empty",
        "iso-dashes",
        "two-digits",
        "nine-digits",
        "before-1800",
        "slashes",
    ],
)
def test_fhir_date_invalid(da: str) -> None:
    with pytest.raises(DateProblem, match=re.escape(repr(da))):
        fhir_date(da)


@pytest.mark.parametrize(
    ("da", "tm", "offset", "zone", "expected"),
    [
        # full DA + TM, zone from Europe/London (GMT in winter, BST in summer)
        ("20240305", "143015", None, LONDON, "2024-03-05T14:30:15+00:00"),
        ("20240705", "143015", None, LONDON, "2024-07-05T14:30:15+01:00"),
        ("20241215", "000000", None, LONDON, "2024-12-15T00:00:00+00:00"),
        # fractions keep the precision DICOM gave
        ("20240305", "143015.123456", None, LONDON, "2024-03-05T14:30:15.123456+00:00"),
        ("20240305", "143015.1", None, LONDON, "2024-03-05T14:30:15.1+00:00"),
        ("20240705", "143015.5", None, LONDON, "2024-07-05T14:30:15.5+01:00"),
        # partial times (FHIR needs seconds once a time is given)
        ("20240305", "14", None, LONDON, "2024-03-05T14:00:00+00:00"),
        ("20240305", "1430", None, LONDON, "2024-03-05T14:30:00+00:00"),
        ("20240705", "1430", None, LONDON, "2024-07-05T14:30:00+01:00"),
        # legacy ACR-NEMA forms
        ("2024.03.05", "143015", None, LONDON, "2024-03-05T14:30:15+00:00"),
        ("20240305", "14:30:15", None, LONDON, "2024-03-05T14:30:15+00:00"),
        # partial dates without a time
        ("2024", None, None, LONDON, "2024"),
        ("202403", None, None, LONDON, "2024-03"),
        ("202403", "", None, LONDON, "2024-03"),
        # explicit TimezoneOffsetFromUTC wins over the trust's zone
        ("20240305", "143015", "+0100", LONDON, "2024-03-05T14:30:15+01:00"),
        ("20240305", "143015", "-0500", LONDON, "2024-03-05T14:30:15-05:00"),
        ("20240705", "143015", "+0000", LONDON, "2024-07-05T14:30:15+00:00"),
        ("20240305", "143015", "+0530", LONDON, "2024-03-05T14:30:15+05:30"),
        ("20240305", "143015", "+1400", LONDON, "2024-03-05T14:30:15+14:00"),
        ("20240305", "143015", "-1200", LONDON, "2024-03-05T14:30:15-12:00"),
        # an offset with no time has nothing to qualify
        ("20240305", None, "+0100", LONDON, "2024-03-05"),
        # the UK clock changes of 2024: 31 March 01:00 GMT and 27 October 02:00 BST
        ("20240331", "003000", None, LONDON, "2024-03-31T00:30:00+00:00"),
        ("20240331", "023000", None, LONDON, "2024-03-31T02:30:00+01:00"),
        ("20241027", "003000", None, LONDON, "2024-10-27T00:30:00+01:00"),
        ("20241027", "023000", None, LONDON, "2024-10-27T02:30:00+00:00"),
        # another trust zone
        ("20240105", "120000", None, NEW_YORK, "2024-01-05T12:00:00-05:00"),
        ("20240705", "120000", None, NEW_YORK, "2024-07-05T12:00:00-04:00"),
        ("20240105", "120000", None, KOLKATA, "2024-01-05T12:00:00+05:30"),
        # no date at all
        (None, None, None, LONDON, None),
        ("", None, None, LONDON, None),
        ("", "", None, LONDON, None),
        (None, None, "+0100", LONDON, None),
    ],
    ids=[
        "winter-default-zone",
        "summer-default-zone",
        "midnight",
        "fraction-6",
        "fraction-1",
        "fraction-summer",
        "time-hh",
        "time-hhmm",
        "time-hhmm-summer",
        "legacy-date",
        "legacy-time",
        "year-only",
        "year-month",
        "year-month-empty-time",
        "offset-plus-0100",
        "offset-minus-0500",
        "offset-zero-in-summer",
        "offset-half-hour",
        "offset-max",
        "offset-min",
        "offset-without-time",
        "spring-forward-before",
        "spring-forward-after",
        "fall-back-before",
        "fall-back-after",
        "new-york-winter",
        "new-york-summer",
        "kolkata",
        "none",
        "empty-date",
        "empty-date-empty-time",
        "offset-only",
    ],
)
def test_fhir_datetime_valid(
    da: str | None, tm: str | None, offset: str | None, zone: ZoneInfo, expected: str | None
) -> None:
    found = fhir_datetime(da, tm, offset, zone)
    assert found == expected
    if found is not None:
        assert FHIR_DATETIME.fullmatch(found), f"{found!r} is not a FHIR dateTime"


@pytest.mark.parametrize(
    ("da", "tm", "offset", "named"),
    [
        ("20231345", "143015", None, "20231345"),
        ("2023023", None, None, "2023023"),
        ("abcd", "143015", None, "abcd"),
        ("20230229", None, None, "20230229"),
        ("20240305", "2561", None, "2561"),
        ("20240305", "1260", None, "1260"),
        ("20240305", "240000", None, "240000"),
        ("20240305", "14301", None, "14301"),
        ("20240305", "143015.1234567", None, "143015.1234567"),
        ("20240305", "1430xx", None, "1430xx"),
        ("20240305", "143015.", None, "143015."),
        ("20240305", "143015", "0100", "0100"),
        ("20240305", "143015", "+01:00", "+01:00"),
        ("20240305", "143015", "+1500", "+1500"),
        ("20240305", "143015", "+0160", "+0160"),
        ("20240305", "143015", "UTC", "UTC"),
        (None, "143015", None, "143015"),
        ("", "1430", None, "1430"),
        ("2024", "1430", None, "1430"),
        ("202403", "143015", None, "143015"),
    ],
    ids=[
        "date-month-13",
        "date-seven-digits",
        "date-letters",
        "date-not-leap",
        "time-hour-25",
        "time-minute-60",
        "time-hour-24",
        "time-odd-digits",
        "time-fraction-7",
        "time-letters",
        "time-trailing-dot",
        "offset-no-sign",
        "offset-colon",
        "offset-hour-15",
        "offset-minute-60",
        "offset-name",
        "time-without-date",
        "time-with-empty-date",
        "time-with-year",
        "time-with-year-month",
    ],
)
def test_fhir_datetime_invalid_names_the_value(da: str | None, tm: str | None, offset: str | None, named: str) -> None:
    with pytest.raises(DateProblem, match=re.escape(repr(named))):
        fhir_datetime(da, tm, offset, LONDON)


def test_fhir_datetime_offset_beyond_fhir_range_refused() -> None:
    """DICOM offsets run -1200..+1400 and FHIR zones stop at 14:00: '+1430' is neither."""
    with pytest.raises(DateProblem, match=re.escape("'+1430'")):
        fhir_datetime("20240305", "143015", "+1430", LONDON)


def test_fhir_datetime_leap_second_kept() -> None:
    """PS3.5 TM allows SS = 60 (leap second) and FHIR dateTime allows :60 too."""
    assert fhir_datetime("20161231", "235960", "+0000", LONDON) == "2016-12-31T23:59:60+00:00"


def test_fhir_datetime_problem_is_a_value_error() -> None:
    """Callers that only know ValueError still catch it."""
    with pytest.raises(ValueError):
        fhir_datetime("20231345", None, None, LONDON)

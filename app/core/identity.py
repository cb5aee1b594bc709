"""Patient identity: the NHS number and its Modulus 11 check digit (NHS Data Dictionary). Pure."""

from __future__ import annotations

from functools import lru_cache

_WEIGHTS = range(10, 1, -1)


def nhs_check_digit(first_nine: str) -> int | None:
    """The check digit of nine digits; None when Modulus 11 gives 10 (no NHS number starts so)."""
    check = 11 - sum(int(d) * w for d, w in zip(first_nine, _WEIGHTS, strict=True)) % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def nhs_number_problem(value: str) -> str | None:
    """Why `value` is not an NHS number (10 digits, Modulus 11 check digit), or None if it is."""
    if len(value) != 10 or not value.isascii() or not value.isdigit():
        return f"{value!r} is not an NHS number: it must be exactly 10 digits"
    if nhs_check_digit(value[:9]) != int(value[9]):
        return f"{value!r} is not an NHS number: its check digit fails the Modulus 11 test"
    return None


@lru_cache(maxsize=8192)
def is_nhs_number(value: str) -> bool:
    """Remembered per value: the same patients' numbers are checked on every study of every search."""
    return nhs_number_problem(value) is None

"""Acquisition dates from file names and GeoTIFF tags, and the day-of-year positions the network takes."""

from __future__ import annotations

import datetime as dt
import re
from typing import Mapping, Sequence

_MONTHS = {name: i + 1 for i, name in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"])}
_MONTHS.update({name[:3]: i for name, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))

# Tried in this order; the first match in a name wins. In SAFE-style names the first timestamp is the
# acquisition, the second the processing date, so the leftmost match is the one we want.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("YYYYMMDDTHHMMSS", re.compile(r"(?<!\d)(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})T\d{6}(?!\d)")),
    # also YYYY_MM_DD and YYYY.MM.DD (many export scripts' names), the same separator twice
    ("YYYY-MM-DD", re.compile(r"(?<!\d)(?P<year>\d{4})(?P<sep>[-_.])(?P<month>\d{2})(?P=sep)(?P<day>\d{2})(?!\d)")),
    ("YYYYMMDD", re.compile(r"(?<!\d)(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})(?!\d)")),
    ("YYYYDDD", re.compile(r"(?<!\d)(?P<year>\d{4})(?P<doy>\d{3})(?:T\d{6})?(?!\d)")),
    ("month_DD_YYYY", re.compile(rf"(?i)(?<![a-z])(?P<month>{_MONTH_RE})[_\- ]?(?P<day>\d{{1,2}})[_\-, ]+(?P<year>\d{{4}})(?!\d)")),
    ("YYYY_month_DD", re.compile(rf"(?i)(?<!\d)(?P<year>\d{{4}})[_\- ]?(?P<month>{_MONTH_RE})[_\- ]?(?P<day>\d{{1,2}})(?!\d)")),
    ("DD_month_YYYY", re.compile(rf"(?i)(?<!\d)(?P<day>\d{{1,2}})[_\- ]?(?P<month>{_MONTH_RE})[_\- ]?(?P<year>\d{{4}})(?!\d)")),
]

_TAG_NAMES = ("ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "system:time_start", "TIFFTAG_DATETIME", "date")


def _from_groups(groups: Mapping[str, str | None]) -> dt.date | None:
    try:
        year = int(groups["year"])  # type: ignore[arg-type]
        if groups.get("doy"):
            doy = int(groups["doy"])  # type: ignore[arg-type]
            if not 1 <= doy <= 366:
                return None
            return dt.date(year, 1, 1) + dt.timedelta(days=doy - 1)
        month_text = str(groups["month"])
        month = int(month_text) if month_text.isdigit() else _MONTHS[month_text.lower()]
        date = dt.date(year, month, int(groups["day"]))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None
    return date if 1980 <= date.year <= 2100 else None


def date_from_name(name: str, pattern: str | None = None) -> dt.date | None:
    """The acquisition date in a file name, or None.

    ``pattern`` is a user regex with named groups ``year`` and ``month`` + ``day`` (or ``doy``); without
    it the built-in forms are tried: YYYYMMDDTHHMMSS, YYYY-MM-DD (or YYYY_MM_DD, YYYY.MM.DD), YYYYMMDD, YYYYDDD
    (HLS), and spelled-out months (``june_28_2021``, ``28-jun-2021``, ``2021-Jun-28``).
    """
    patterns = [("user", re.compile(pattern))] if pattern else _PATTERNS
    for _, regex in patterns:
        for match in regex.finditer(name):
            date = _from_groups(match.groupdict())
            if date is not None:
                return date
    return None


def date_from_tags(tags: Mapping[str, str]) -> dt.date | None:
    """The acquisition date in GeoTIFF tags (``ACQUISITION_DATE``, ``TIFFTAG_DATETIME``, ...), or None."""
    for key in _TAG_NAMES:
        value = tags.get(key)
        if not value:
            continue
        value = str(value).strip()
        if value.isdigit() and len(value) >= 12:  # milliseconds since the epoch (Earth Engine)
            return dt.datetime.fromtimestamp(int(value) / 1000, dt.timezone.utc).date()
        match = re.match(r"(\d{4})[:\-/](\d{2})[:\-/](\d{2})", value)
        if match:
            try:
                return dt.date(*map(int, match.groups()))
            except ValueError:
                continue
        found = date_from_name(value)
        if found:
            return found
    return None


def day_positions(dates: Sequence[dt.date]) -> list[int]:
    """Network positions: days since 1 January of the first date's year (day of year, 1 January = 0,
    continuing past 365 for series that cross a year end)."""
    if not dates:
        return []
    origin = dt.date(min(dates).year, 1, 1)
    return [(d - origin).days for d in dates]

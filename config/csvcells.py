"""CSV that a spreadsheet opens as data, never as formulas: the one writer every CSV file of the
project (the 台账, quarterly reports, energy and carbon reports) is written with.

Excel, WPS and LibreOffice run a cell that begins with `=`, `+`, `-` or `@` as a formula (and
strip a leading tab or carriage return first), so a close cause typed as
`=HYPERLINK("http://x","y")` would become a live link, or worse, in the inspector's copy of the
台账. `neutralise` puts a `'` before such a text cell: spreadsheets show the text as it was
typed and hide the quote. Numbers stay numbers: an int, float or Decimal is written as it is,
and so is text that is exactly a decimal number (`-3.5`, `+1e-3`: the values the reports format
themselves), which no spreadsheet reads as anything but that number.

It lives in config/ beside the one Jinja2 environment (config/templates.py) for the same reason:
every package that renders output for people (alerts/, energy/, compliance/, and the edges above
them) may import config/, while store/ is PostgreSQL only.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, Protocol

# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class _Stream(Protocol):
    def write(self, text: str, /) -> Any: ...


def neutralise(value: object) -> object:
    """The cell as it may be written: a text beginning like a formula gets a leading `'`;
    numbers (and text that is exactly a decimal number) and everything else are unchanged.
    So does a text that `restore` would change (`'=x`), so that it reads back as it was."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        if _NUMBER.fullmatch(value):
            return value
        return "'" + value
    if isinstance(value, str) and restore(value) != value:
        return "'" + value
    return value


def restore(text: str) -> str:
    """A cell of a file written through `neutralise` as it was given: the `'` it put before a
    text is taken off (the site workbook's CSV import reads cells back with it)."""
    if text.startswith("'") and text[1:].startswith((*FORMULA_STARTS, "'")):
        return text[1:]
    return text


class SafeWriter:
    """`csv.writer` whose rows go through `neutralise` cell by cell."""

    def __init__(self, stream: _Stream, **fmt: Any) -> None:
        self._writer = csv.writer(stream, **fmt)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([neutralise(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(stream: _Stream, **fmt: Any) -> SafeWriter:
    """A CSV writer for files people open in a spreadsheet (keyword arguments as `csv.writer`)."""
    return SafeWriter(stream, **fmt)

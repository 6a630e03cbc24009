"""CSV cells a spreadsheet would run as formulas are written as text (config/csvcells.py), and
every CSV writer of the project goes through that one helper."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from config import csvcells

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+86-531-0000-1001", "'+86-531-0000-1001"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("面板被调低", "面板被调低"),
        ("a=b", "a=b"),
        ("", ""),
        ("-3.5", "-3.5"),
        ("+1e-3", "+1e-3"),
        (-3.5, -3.5),
        (-12, -12),
        (Decimal("-0.5810"), Decimal("-0.5810")),
        (None, None),
    ],
)
def test_neutralise(cell: object, written: object) -> None:
    assert csvcells.neutralise(cell) == written


def test_rows_read_back_as_text_and_numbers() -> None:
    out = io.StringIO()
    csvcells.writer(out, lineterminator="\n").writerows([["=1+1", -2.5, Decimal("-1.20"), "x"]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["'=1+1", "-2.5", "-1.20", "x"]]


def test_every_csv_writer_of_the_project_is_the_safe_one() -> None:
    """A new `csv.writer` / `csv.DictWriter` outside config/csvcells.py would write cells raw."""
    raw = re.compile(r"\bcsv\.(writer|DictWriter)\(")
    # The project's own files as git knows them: virtual environments and build folders,
    # wherever a developer keeps them, hold other people's code.
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = [
        name
        for name in tracked
        if not name.startswith("tests/")
        and name != "config/csvcells.py"
        and raw.search((ROOT / name).read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "text",
    ["=1+1", "'=1+1", "''=1+1", "+86-531", "'plain", "''", "'", "-3.5", "\t=x", "面板", "a'=b"],
)
def test_restore_gives_back_what_neutralise_was_given(text: str) -> None:
    written = csvcells.neutralise(text)
    assert isinstance(written, str)
    assert csvcells.restore(written) == text

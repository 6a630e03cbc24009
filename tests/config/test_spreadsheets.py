"""The one reader of spreadsheets (config/spreadsheets.py): cells with their places, limits as a
parameter, and what it refuses, for bytes and paths alike."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from openpyxl import Workbook

from config import spreadsheets
from config.spreadsheets import Limits, SpreadsheetError


def _xlsx(rows: list[list[object]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "账单 bills"
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


FORMULA = "formulas are not accepted: enter the value (text beginning with = needs a leading ')"


def test_xlsx_rows_with_their_numbers_and_refused_cells(tmp_path: Path) -> None:
    data = _xlsx([["a", "b"], [], [1.5, "=SUM(1,2)"], ["x" * 11, None]])
    path = tmp_path / "book.xlsx"
    path.write_bytes(data)
    for source in (data, path):
        with spreadsheets.read_xlsx(source, Limits(max_cell_chars=10), header_rows=1) as tables:
            [table] = tables
            rows = list(table.rows)
        assert table.name == "账单 bills"
        assert [(r.number, r.cells[:2]) for r in rows] == [
            (1, ["a", "b"]),
            (3, [1.5, None]),  # the formula reads as empty, and is named
            (4, [None, None]),
        ]
        assert [(p.cell(r.number), p.en) for r in rows for p in r.problems] == [
            ("B3", FORMULA),
            ("A4", "longer than 10 characters"),
        ]


def test_csv_in_gb18030_and_its_bounds() -> None:
    text = "站点,数量\n一号楼,=1+1\n二号楼,5\n三号楼,6\n"
    table = spreadsheets.read_csv(text.encode("gb18030"), Limits(max_rows=2), header_rows=1)
    rows = list(table.rows)
    assert [r.cells for r in rows[:3]] == [["站点", "数量"], ["一号楼", None], ["二号楼", "5"]]
    assert [p.cell(3) for p in rows[1].problems] == ["B3"]
    assert rows[3].number == 4 and rows[3].cells == []
    assert "more than 2 data rows" in rows[3].problems[0].en
    with pytest.raises(SpreadsheetError, match="neither UTF-8 nor GB18030"):
        spreadsheets.read_csv(b"\xff\xff\xff", Limits(), header_rows=1)
    with pytest.raises(SpreadsheetError, match="too large"):
        spreadsheets.read_csv(text.encode(), Limits(max_file_bytes=10), header_rows=1)
    wide = spreadsheets.read_csv(b"a,b,c\n", Limits(max_columns=2), header_rows=1)
    assert [p.cell(1) for r in wide.rows for p in r.problems] == ["C1"]


def test_macros_and_what_is_no_workbook_are_refused() -> None:
    with pytest.raises(SpreadsheetError, match="macros"):
        spreadsheets.refuse_macros("bills.XLSM")
    junk = spreadsheets.read_xlsx(b"PK\x03\x04junk", Limits(), header_rows=1)
    with pytest.raises(SpreadsheetError, match=r"not an Excel \.xlsx workbook"), junk:
        pass
    big = spreadsheets.read_xlsx(_xlsx([["a"]]), Limits(max_unpacked_bytes=100), header_rows=1)
    with pytest.raises(SpreadsheetError, match="unpacks to too much"), big:
        pass


def test_header_matching() -> None:
    header = spreadsheets.header_columns(
        [" Site ", None, "数量", "colour", "site"], {"site": "site", "数量": "quantity"}
    )
    assert header.columns == ["site", None, "quantity", None, None]
    assert [(p.column, p.en) for p in header.problems] == [
        (4, "unknown column 'colour' (expected: site, quantity)"),
        (5, "duplicate column 'site' (expected: site, quantity)"),
    ]
    assert (header.name(3), header.name(9), header.name(0)) == ("quantity", None, None)

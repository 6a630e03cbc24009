"""Reading spreadsheets: the one bounded reader of .xlsx workbooks and CSV files that every
operator file in a spreadsheet goes through (the site workbook, `config/sitefiles.py`; utility
bills, `energy/bills.py`).

A file comes in as bytes or a path; out come its sheets, each a stream of its non-blank rows
with their row numbers, the cells in column order. Reading is bounded by `Limits` (the file,
what a zip unpacks to, rows, columns, a cell's length; xlsx in openpyxl's read-only mode) and
refuses what a spreadsheet would compute rather than hold:
- a workbook that may hold macros (`.xlsm`, `.xltm`, `.xlsb`, `.xls`, or a `vbaProject.bin`
  inside): the whole file, `SpreadsheetError`;
- a formula cell (never its cached result), a CSV cell beginning with `=` (what a spreadsheet
  saved from a formula), a cell longer than the limit, a value beyond the last column read:
  a `CellProblem` of its row, named by sheet, row and column, in Chinese and English; the cell
  reads as empty.
CSV is UTF-8 (with or without a BOM) or GB18030, as Excel in Chinese saves it; a cell is read
back through `csvcells.restore` (the `'` our own CSV writer puts before a formula-like text).

What the columns are is the caller's: `header_columns` matches a header row against the
names a caller knows, the same way for every file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException

from config import csvcells

Cell = str | int | float | bool | dt.datetime | dt.date | dt.time | None
XLSX_SUFFIXES = (".xlsx",)
MACRO_SUFFIXES = (".xlsm", ".xltm", ".xlsb", ".xls")
ZIP_MAGIC = b"PK\x03\x04"
RawCells = tuple[list[Cell], list[int]]  # a row's values as read, and its formulas' columns


@dataclass(frozen=True)
class Limits:
    """How much of a file is read at most. The defaults are the site workbook's (a site of
    100,000 spaces); a caller with smaller files passes smaller ones."""

    max_file_bytes: int = 64 * 1024 * 1024  # the file as given (xlsx or zip), or a CSV
    max_unpacked_bytes: int = 512 * 1024 * 1024  # what a zip (xlsx is one) holds unpacked
    max_rows: int = 200_000  # data rows per sheet (below its header rows)
    max_columns: int = 40
    max_cell_chars: int = 4_000


class SpreadsheetError(Exception):
    """A file that cannot be read at all; `sheet` names the sheet (or CSV file) when one is
    to blame."""

    def __init__(self, zh: str, en: str, sheet: str = "") -> None:
        self.zh, self.en, self.sheet = zh, en, sheet
        super().__init__(f"{zh} {en}")


@dataclass(frozen=True, slots=True)
class CellProblem:
    """A refused cell (`column` from 1) or row (`column` 0): the caller names the column by its
    header."""

    column: int
    zh: str
    en: str

    def cell(self, row: int) -> str:
        """The cell as a spreadsheet names it (`E2`), or the row (`2`)."""
        return f"{get_column_letter(self.column)}{row}" if self.column else str(row)


@dataclass(frozen=True, slots=True)
class Row:
    number: int  # as the spreadsheet shows it, from 1
    cells: list[Cell]  # column 1 first (an xlsx row as wide as read); a refused cell is None
    problems: list[CellProblem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Table:
    """One sheet (or CSV file): `name` as the file gives it ("" for a lone CSV file), its
    non-blank rows in order. The rows of an xlsx sheet stream from the open workbook."""

    name: str
    rows: Iterator[Row]


def refuse_macros(name: str) -> None:
    """Raises SpreadsheetError for a file name whose type may hold macros."""
    suffix = Path(name).suffix.lower()
    if suffix in MACRO_SUFFIXES:
        raise SpreadsheetError(
            f"不接受 {suffix} 文件（可能含宏）：请另存为 .xlsx",
            f"{suffix} files are not accepted (they may hold macros): save as .xlsx",
        )


def check_size(size: int, limits: Limits, what: str = "") -> None:
    if size > limits.max_file_bytes:
        raise SpreadsheetError(
            f"文件过大（{size} 字节，上限 {limits.max_file_bytes}）",
            f"{what or 'the file'} is too large ({size} bytes; at most {limits.max_file_bytes})",
        )


def check_zip(archive: zipfile.ZipFile, limits: Limits, *, xlsx: bool) -> None:
    """A zip (an xlsx is one) within the unpacked limit; an xlsx without macros."""
    members = archive.infolist()
    unpacked = sum(m.file_size for m in members)
    if unpacked > limits.max_unpacked_bytes or len(members) > 10_000:
        raise SpreadsheetError(
            f"压缩内容过大（解压后 {unpacked} 字节）",
            f"the archive unpacks to too much ({unpacked} bytes in {len(members)} members)",
        )
    if xlsx and any(m.filename.lower().endswith("vbaproject.bin") for m in members):
        raise SpreadsheetError(
            "工作簿含宏（vbaProject.bin），不予接受：请另存为不含宏的 .xlsx",
            "the workbook holds macros (vbaProject.bin): save it as a macro-free .xlsx",
        )


def is_xlsx(name: str, data: bytes) -> bool:
    """Whether a file is to be read as a workbook: by its name, else its first bytes."""
    return Path(name).suffix.lower() in XLSX_SUFFIXES or data[:4] == ZIP_MAGIC


@contextmanager
def read_xlsx(source: Path | bytes, limits: Limits, header_rows: int) -> Iterator[list[Table]]:
    """The sheets of an .xlsx workbook, open while the `with` block lasts (read their rows in
    it). Raises SpreadsheetError for a file too large, not a workbook, or with macros."""
    opened = source if isinstance(source, Path) else io.BytesIO(source)
    try:
        check_size(source.stat().st_size if isinstance(source, Path) else len(source), limits)
        with zipfile.ZipFile(opened) as archive:
            check_zip(archive, limits, xlsx=True)
        workbook = load_workbook(opened, read_only=True, data_only=False, keep_links=False)
    except (
        zipfile.BadZipFile,
        InvalidFileException,
        OSError,
        KeyError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise SpreadsheetError(
            f"不是有效的 .xlsx 工作簿：{exc}",
            f"not a valid .xlsx file (not an Excel .xlsx workbook, or a damaged one): {exc}",
        ) from exc
    try:
        yield [
            Table(ws.title, _rows(_xlsx_cells(ws, limits), limits, header_rows))
            for ws in workbook.worksheets
        ]
    finally:
        workbook.close()


def _xlsx_cells(worksheet: Any, limits: Limits) -> Iterator[RawCells]:
    """Each row's values, at most `max_columns` + 1 wide, and which of them are formulas."""
    for row in worksheet.iter_rows(max_col=limits.max_columns + 1):
        yield (
            [cell.value for cell in row],
            [i for i, cell in enumerate(row, start=1) if getattr(cell, "data_type", "") == "f"],
        )


def read_csv(data: bytes, limits: Limits, header_rows: int, name: str = "") -> Table:
    """The rows of one CSV file (UTF-8 or GB18030). Raises SpreadsheetError for a file too
    large or not text."""
    check_size(len(data), limits, name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")  # what Excel in Chinese saves CSV as
        except UnicodeDecodeError as exc:
            raise SpreadsheetError(
                "CSV 须为 UTF-8 或 GB18030 编码",
                f"{name or 'the CSV file'} is neither UTF-8 nor GB18030 text: {exc}",
                name,
            ) from exc
    return Table(name, _rows(_csv_cells(text, name), limits, header_rows))


def _csv_cells(text: str, name: str) -> Iterator[RawCells]:
    """A CSV's rows: text with the quote `csvcells` adds taken off; a cell that begins with `=`
    is what a spreadsheet saved from a formula, marked as one."""
    try:
        for row in csv.reader(io.StringIO(text, newline="")):
            yield (
                [csvcells.restore(v) if v else None for v in row],
                [i for i, v in enumerate(row, start=1) if v.startswith("=")],
            )
    except csv.Error as exc:
        raise SpreadsheetError(
            f"CSV 格式错误：{exc}", f"{name or 'the file'} is not valid CSV: {exc}", name
        ) from exc


def _rows(source: Iterable[RawCells], limits: Limits, header_rows: int) -> Iterator[Row]:
    """The non-blank rows, each cell checked; at most `max_rows` of them below the first
    `header_rows` rows (and at most twice as many rows, blank ones included): past that, a
    row with only the problem, and no more."""
    data = 0
    last = 2 * limits.max_rows + header_rows
    for number, (values, formulas) in enumerate(source, start=1):
        row = _row(number, values, formulas, limits)
        if row is not None and number > header_rows:
            data += 1
        if data > limits.max_rows or number > last:
            problem = CellProblem(
                0,
                f"行数超过上限 {limits.max_rows}（含空行时 {2 * limits.max_rows}）",
                f"more than {limits.max_rows} data rows (or {2 * limits.max_rows} rows, "
                "empty ones included)",
            )
            yield Row(number, [], [problem])
            return
        if row is not None:
            yield row


def _row(number: int, values: list[Cell], formulas: list[int], limits: Limits) -> Row | None:
    """The row's cells (a refused one as None, with its problem); None for a blank row. A cell
    of only white space is empty. (Comprehensions, not a loop a cell: this runs for every
    cell of a 100,000-space workbook.)"""
    cells = [None if type(v) is str and not v.strip() else v for v in values]
    problems: list[CellProblem] = []
    width = limits.max_columns
    if len(cells) > width:
        beyond = [i for i, v in enumerate(cells[width:], start=width + 1) if v is not None]
        if beyond:
            problems.append(
                CellProblem(
                    beyond[0],
                    f"超出最多 {width} 列",
                    f"beyond the last column read ({width})",
                )
            )
        del cells[width:]
    for index in formulas:
        if index <= width:
            cells[index - 1] = None
            problems.append(
                CellProblem(
                    index,
                    "不接受公式：请填写数值或文本（文本以 ' 开头）",
                    "formulas are not accepted: enter the value (text beginning with = "
                    "needs a leading ')",
                )
            )
    most = limits.max_cell_chars
    for index in [i for i, v in enumerate(cells, start=1) if type(v) is str and len(v) > most]:
        cells[index - 1] = None
        problems.append(
            CellProblem(index, f"内容过长（上限 {most} 字符）", f"longer than {most} characters")
        )
    if not problems and cells.count(None) == len(cells):
        return None
    problems.sort(key=lambda p: p.column)
    return Row(number, cells, problems)


@dataclass(frozen=True, slots=True)
class Header:
    """What a header row says: the name of each column (None: no name), and the columns
    whose text is no known name or a name given twice."""

    columns: list[str | None]
    problems: list[CellProblem]

    def name(self, column: int) -> str | None:
        """The name of a column (from 1), None for one without."""
        return self.columns[column - 1] if 0 < column <= len(self.columns) else None


def header_columns(cells: Sequence[Cell], names: Mapping[str, str]) -> Header:
    """The columns of a header row: each cell's text, trimmed and without regard to case,
    looked up in `names` (what a header may say → the column's name)."""
    folded = {k.lower(): v for k, v in names.items()}
    expected = ", ".join(dict.fromkeys(names.values()))
    columns: list[str | None] = []
    problems: list[CellProblem] = []
    for index, value in enumerate(cells, start=1):
        text = str(value).strip() if value is not None else ""
        name = folded.get(text.lower())
        if text and (name is None or name in columns):
            if name is None:
                zh, en = f"未知的列 {text!r}（可用：{expected}）", f"unknown column {text!r}"
            else:
                zh, en = f"重复的列 {text!r}", f"duplicate column {text!r}"
            problems.append(CellProblem(index, zh, f"{en} (expected: {expected})"))
            name = None
        columns.append(name if text else None)
    return Header(columns, problems)

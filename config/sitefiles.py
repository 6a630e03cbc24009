"""The site workbook as files: reading and writing .xlsx (openpyxl) and CSV (a folder or a zip
of one `{sheet}.csv` per sheet), and an import planned against a configuration directory and
written as that site's YAML file (docs/config-formats.md, "Site workbook").

Reading is bounded (`Limits`: file size, unpacked size, rows, columns, cell length; xlsx in
openpyxl's read-only mode) and refuses what a spreadsheet would compute rather than hold: a
formula cell, a macro-enabled workbook, a CSV cell that begins with `=`. CSV is written with
`config.csvcells` (no cell read as a formula) and read back through `csvcells.restore`; an
xlsx text cell is always written as text, never as a formula.

An import is planned (`plan_import`: the model from the workbook, the diff against the site's
file in the configuration directory, and the YAML text that file will hold, validated with
every other site and clause file of the directory exactly as `clausewatch check` and the service
load them), then applied (`apply_import`: that text replaces the site's file atomically; the
previous file is kept beside it as `*.bak`). Syncing the registry is the caller's
(`clausewatch site import` does it when it has a database; the service does at start).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.utils.exceptions import InvalidFileException

from config import csvcells
from config.documents import ConfigError, Problem
from config.files import load_files, load_site, yaml_files
from config.sitebook import (
    HEADER_ROWS,
    SHEETS,
    SHEETS_BY_KEY,
    Cell,
    OutCell,
    Rows,
    Sheet,
    SheetProblem,
    SheetRows,
    SiteDiff,
    WorkbookError,
    WorkbookRows,
    site_diff,
    site_from_rows,
    site_rows,
)
from rules.site import SiteModel

XLSX_SUFFIXES = (".xlsx",)
MACRO_SUFFIXES = (".xlsm", ".xltm", ".xlsb", ".xls")


@dataclass(frozen=True)
class Limits:
    """How much of a workbook is read at most. The defaults take a site of 100,000 spaces."""

    max_file_bytes: int = 64 * 1024 * 1024  # the file as uploaded (xlsx or zip), or a CSV
    max_unpacked_bytes: int = 512 * 1024 * 1024  # what a zip (xlsx is one) holds unpacked
    max_rows: int = 200_000  # data rows per sheet
    max_columns: int = 40
    max_cell_chars: int = 4_000


def _problem(sheet: str, row: int, column: str, zh: str, en: str) -> SheetProblem:
    return SheetProblem(sheet, row, column, zh, en)


def _fail(zh: str, en: str, sheet: str = "") -> WorkbookError:
    return WorkbookError([_problem(sheet, 0, "", zh, en)])


# ---- reading ----


def read_workbook(path: Path, limits: Limits = Limits()) -> WorkbookRows:
    """The data rows of each sheet of an .xlsx file, a folder of CSV files or a zip of them,
    with the problems of its cells (a formula, an unknown column) named by sheet, row and
    column. Raises WorkbookError for a file that cannot be read as a workbook at all."""
    if path.is_dir():
        return _read_csv_folder(path, limits)
    suffix = path.suffix.lower()
    if suffix in MACRO_SUFFIXES:
        raise _fail(
            f"不接受 {suffix} 文件（可能含宏）：请另存为 .xlsx",
            f"{suffix} files are not accepted (they may hold macros): save as .xlsx",
        )
    if suffix not in (*XLSX_SUFFIXES, ".zip"):
        if suffix == ".csv":
            raise _fail(
                "CSV 须为每张表一个文件，放在一个文件夹或 zip 中",
                "CSV comes as one file per sheet, in a folder or a zip",
            )
        raise _fail(
            f"不支持的文件类型 {suffix!r}：请用 .xlsx、.zip 或文件夹",
            f"unsupported file type {suffix!r}: use .xlsx, .zip or a folder of CSV files",
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _fail(f"无法读取文件：{exc}", f"cannot read the file: {exc}") from exc
    if size > limits.max_file_bytes:
        raise _fail(
            f"文件过大（{size} 字节，上限 {limits.max_file_bytes}）",
            f"the file is too large ({size} bytes; at most {limits.max_file_bytes})",
        )
    if suffix in XLSX_SUFFIXES:
        return _read_xlsx(path, limits)
    return _read_csv_zip(path, limits)


def _check_zip(archive: zipfile.ZipFile, limits: Limits, *, xlsx: bool) -> None:
    members = archive.infolist()
    unpacked = sum(m.file_size for m in members)
    if unpacked > limits.max_unpacked_bytes or len(members) > 10_000:
        raise _fail(
            f"压缩内容过大（解压后 {unpacked} 字节）",
            f"the archive unpacks to too much ({unpacked} bytes in {len(members)} members)",
        )
    if xlsx and any(m.filename.lower().endswith("vbaproject.bin") for m in members):
        raise _fail(
            "工作簿含宏（vbaProject.bin），不予接受：请另存为不含宏的 .xlsx",
            "the workbook holds macros (vbaProject.bin): save it as a macro-free .xlsx",
        )


def _read_xlsx(path: Path, limits: Limits) -> WorkbookRows:
    try:
        with zipfile.ZipFile(path) as archive:
            _check_zip(archive, limits, xlsx=True)
        workbook = load_workbook(path, read_only=True, data_only=False, keep_links=False)
    except (zipfile.BadZipFile, InvalidFileException, OSError, KeyError) as exc:
        raise _fail(
            f"不是有效的 .xlsx 工作簿：{exc}", f"not a valid .xlsx workbook: {exc}"
        ) from exc
    try:
        tables: dict[str, Iterator[list[tuple[Cell, bool]]]] = {}
        problems: list[SheetProblem] = []
        for worksheet in workbook.worksheets:
            sheet = _sheet_named(worksheet.title)
            if sheet is None:
                problems.append(_unknown_sheet(worksheet.title))
                continue
            tables[sheet.key] = _xlsx_rows(worksheet, limits)
        return _tables(tables, limits, problems)
    finally:
        workbook.close()


def _xlsx_rows(worksheet: Any, limits: Limits) -> Iterator[list[tuple[Cell, bool]]]:
    """Each row's cells as (value, is a formula), at most `max_columns` + 1 wide."""
    for row in worksheet.iter_rows(max_col=limits.max_columns + 1):
        yield [(cell.value, getattr(cell, "data_type", None) == "f") for cell in row]


def _read_csv_folder(folder: Path, limits: Limits) -> WorkbookRows:
    texts: dict[str, bytes] = {}
    problems: list[SheetProblem] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        sheet = _sheet_named(path.stem) if path.suffix.lower() == ".csv" else None
        if sheet is None:
            problems.append(_unknown_sheet(path.name))
            continue
        if path.stat().st_size > limits.max_file_bytes:
            problems.append(_problem(sheet.key, 0, "", "文件过大", f"{path.name} is too large"))
            continue
        texts[sheet.key] = path.read_bytes()
    return _csv_tables(texts, limits, problems)


def _read_csv_zip(path: Path, limits: Limits) -> WorkbookRows:
    texts: dict[str, bytes] = {}
    problems: list[SheetProblem] = []
    try:
        with zipfile.ZipFile(path) as archive:
            _check_zip(archive, limits, xlsx=False)
            for member in archive.infolist():
                name = Path(member.filename).name
                if member.is_dir() or not name or name.startswith("."):
                    continue
                sheet = _sheet_named(Path(name).stem) if name.lower().endswith(".csv") else None
                if sheet is None:
                    problems.append(_unknown_sheet(member.filename))
                    continue
                if sheet.key in texts:
                    problems.append(
                        _problem(sheet.key, 0, "", "该表出现两次", f"{name} appears twice")
                    )
                    continue
                texts[sheet.key] = archive.read(member)
    except zipfile.BadZipFile as exc:
        raise _fail(f"不是有效的 zip 文件：{exc}", f"not a valid zip file: {exc}") from exc
    return _csv_tables(texts, limits, problems)


def _csv_tables(
    texts: Mapping[str, bytes], limits: Limits, problems: list[SheetProblem]
) -> WorkbookRows:
    tables: dict[str, Iterator[list[tuple[Cell, bool]]]] = {}
    for key, data in texts.items():
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                text = data.decode("gb18030")  # what Excel in Chinese saves CSV as
            except UnicodeDecodeError as exc:
                raise _fail(
                    "CSV 须为 UTF-8 或 GB18030 编码",
                    f"{key}.csv is neither UTF-8 nor GB18030 text: {exc}",
                    key,
                ) from exc
        tables[key] = _csv_rows(text, key)
    return _tables(tables, limits, problems)


def _csv_rows(text: str, key: str) -> Iterator[list[tuple[Cell, bool]]]:
    """A CSV's rows as cells: text with the quote `csvcells` adds taken off; a cell that
    begins with `=` is what a spreadsheet saved from a formula, marked as one."""
    try:
        for row in csv.reader(io.StringIO(text, newline="")):
            yield [(csvcells.restore(v) if v else None, v.startswith("=")) for v in row]
    except csv.Error as exc:
        raise _fail(f"CSV 格式错误：{exc}", f"{key}.csv: {exc}", key) from exc


def _sheet_named(name: str) -> Sheet | None:
    """The sheet a worksheet or CSV file is: by its English key (`spaces`, `空间 spaces`)."""
    words = name.strip().split()
    if not words:
        return None
    return SHEETS_BY_KEY.get(words[-1].lower())


def _unknown_sheet(name: str) -> SheetProblem:
    known = ", ".join(s.title for s in SHEETS)
    return _problem(
        "", 0, "", f"未知的表 {name!r}（可用：{known}）", f"unknown sheet {name!r} (known: {known})"
    )


def _tables(
    tables: Mapping[str, Iterator[list[tuple[Cell, bool]]]],
    limits: Limits,
    problems: list[SheetProblem],
) -> WorkbookRows:
    found: dict[str, SheetRows] = {}
    for key, rows in tables.items():
        found[key] = _sheet_rows(SHEETS_BY_KEY[key], rows, limits, problems)
    for sheet in SHEETS:
        if sheet.required and sheet.key not in found:
            problems.append(
                _problem(sheet.key, 0, "", f"缺少工作表 {sheet.title}", "the sheet is missing")
            )
    return WorkbookRows(found, problems)


def _sheet_rows(
    sheet: Sheet,
    rows: Iterator[list[tuple[Cell, bool]]],
    limits: Limits,
    problems: list[SheetProblem],
) -> SheetRows:
    """The data rows of one sheet, by the English keys of its second header row."""
    known = {c.key for c in sheet.columns}
    columns: list[str | None] = []
    data: SheetRows = []
    before = len(problems)
    for number, cells in enumerate(rows, start=1):
        if number == HEADER_ROWS:
            columns = _header(sheet, cells, known, problems)
            continue
        if number < HEADER_ROWS:
            continue
        if len(problems) - before >= 100:
            problems.append(
                _problem(sheet.key, number, "", "错误过多，停止检查", "too many problems; stopped")
            )
            break
        if len(data) >= limits.max_rows or number > 2 * limits.max_rows + HEADER_ROWS:
            problems.append(
                _problem(
                    sheet.key,
                    number,
                    "",
                    f"行数超过上限 {limits.max_rows}（含空行时 {2 * limits.max_rows}）",
                    f"more than {limits.max_rows} data rows (or {2 * limits.max_rows} rows, "
                    "empty ones included)",
                )
            )
            break
        values: dict[str, Cell] = {}
        for index, (value, formula) in enumerate(cells):
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            column = columns[index] if index < len(columns) else None
            where = column or f"#{index + 1}"
            if formula:
                problems.append(
                    _problem(
                        sheet.key,
                        number,
                        where,
                        "不接受公式：请填写数值或文本（文本以 ' 开头）",
                        "formulas are not accepted: enter the value (text beginning with = "
                        "needs a leading ')",
                    )
                )
                continue
            if column is None:
                problems.append(
                    _problem(
                        sheet.key,
                        number,
                        where,
                        "此列没有表头（第 2 行的英文键）",
                        "a value in a column without a key in header row 2",
                    )
                )
                continue
            if isinstance(value, str) and len(value) > limits.max_cell_chars:
                problems.append(
                    _problem(
                        sheet.key,
                        number,
                        column,
                        f"内容过长（上限 {limits.max_cell_chars} 字符）",
                        f"longer than {limits.max_cell_chars} characters",
                    )
                )
                continue
            values[column] = value
        if values:
            data.append((number, values))
    if not columns and len(problems) == before:
        problems.append(
            _problem(
                sheet.key,
                HEADER_ROWS,
                "",
                "缺少表头：第 1 行中文名，第 2 行英文键",
                "missing headers: Chinese names in row 1, English keys in row 2",
            )
        )
    return data


def _header(
    sheet: Sheet, cells: list[tuple[Cell, bool]], known: set[str], problems: list[SheetProblem]
) -> list[str | None]:
    columns: list[str | None] = []
    for index, (value, _) in enumerate(cells):
        key = str(value).strip() if value is not None else ""
        if not key:
            columns.append(None)
            continue
        if key not in known or key in columns:
            what = "重复的列" if key in columns else "未知的列"
            problems.append(
                _problem(
                    sheet.key,
                    HEADER_ROWS,
                    f"#{index + 1}",
                    f"{what} {key!r}（可用：{', '.join(c.key for c in sheet.columns)}）",
                    f"{'duplicate' if key in columns else 'unknown'} column {key!r}",
                )
            )
            columns.append(None)
            continue
        columns.append(key)
    return columns


# ---- writing ----


def write_workbook(model: SiteModel | None, path: Path) -> None:
    """Writes the workbook of `model` (None: the empty template) as .xlsx, as a zip of CSV files
    (`.zip`), or as CSV files into a folder (any other path)."""
    rows = site_rows(model) if model is not None else {s.key: [] for s in SHEETS}
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        _atomic_write(path, _xlsx_bytes(rows))
    elif suffix == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for sheet in SHEETS:
                archive.writestr(f"{sheet.key}.csv", _csv_bytes(sheet, rows[sheet.key]))
        _atomic_write(path, buffer.getvalue())
    else:
        path.mkdir(parents=True, exist_ok=True)
        for sheet in SHEETS:
            _atomic_write(path / f"{sheet.key}.csv", _csv_bytes(sheet, rows[sheet.key]))


def _xlsx_bytes(rows: Rows) -> bytes:
    workbook = Workbook(write_only=True)
    for sheet in SHEETS:
        worksheet = workbook.create_sheet(sheet.title)
        worksheet.append([_text_cell(worksheet, c.zh) for c in sheet.columns])
        worksheet.append([_text_cell(worksheet, c.key) for c in sheet.columns])
        for row in rows[sheet.key]:
            worksheet.append([_text_cell(worksheet, v) for v in row])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _text_cell(worksheet: Any, value: OutCell) -> Any:
    """A cell whose text is always text: openpyxl would store `=...` as a formula."""
    cell = WriteOnlyCell(worksheet, value)
    if isinstance(value, str):
        cell.data_type = "s"
    return cell


def _csv_bytes(sheet: Sheet, rows: Sequence[Sequence[OutCell]]) -> bytes:
    stream = io.StringIO(newline="")
    writer = csvcells.writer(stream)
    writer.writerow([c.zh for c in sheet.columns])
    writer.writerow([c.key for c in sheet.columns])
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return ("\ufeff" + stream.getvalue()).encode("utf-8")  # BOM: spreadsheets read UTF-8


def _atomic_write(path: Path, data: bytes) -> None:
    """`data` replaces `path` whole or not at all (a temporary file beside it, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# ---- the site's YAML file ----


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)  # 12000, not 12000.0: the model reads it back as the same float
    return value


def site_yaml(model: SiteModel, source: str) -> str:
    """The site file of `model`, as `load_site` reads it back."""
    data = _plain(model.model_dump(mode="python", by_alias=True, exclude_defaults=True))
    for device in data.get("devices", []):
        device.setdefault("metrics", {})
    body = yaml.dump(
        data,
        Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),  # libyaml's emitter: faster
        allow_unicode=True,
        sort_keys=False,
        default_flow_style=None,
        width=100,
    )
    header = (
        f"# Site {model.site.id}, written by `clausewatch site import` from {source}.\n"
        "# Edit it, or export it (`clausewatch site export`), edit the workbook and import again;\n"
        "# comments are not kept by an import. Validated by rules.site.SiteModel.\n"
    )
    return header + body


# ---- an import ----


@dataclass
class ImportPlan:
    """What importing a workbook into a configuration directory would do."""

    model: SiteModel
    before: SiteModel | None
    diff: SiteDiff
    target: Path  # the site's file: the one defining it now, else sites/{id}.yaml
    text: str  # what the file will hold, validated with the rest of the directory


def configured_site(config_dir: Path, site: str) -> tuple[SiteModel | None, Path]:
    """The model of `site` as its file in `config_dir` defines it, and that file (None and the
    file an import would create when no file defines it). Raises ConfigError."""
    for path in yaml_files(config_dir / "sites"):
        model = load_site(path)
        if model.site.id == site:
            return model, path
    return None, config_dir / "sites" / f"{site}.yaml"


def plan_import(book: WorkbookRows, config_dir: Path, source: str) -> ImportPlan:
    """The import of the workbook's `sheets` into `config_dir`: its diff against the site as
    configured, and the file text checked with every other site and clause file there as the
    service loads them. Raises WorkbookError (the workbook) or ConfigError (the directory, or
    a clause that the new site model breaks: a space it names is gone, a state no device has)."""
    model = site_from_rows(book)
    before, target = configured_site(config_dir, model.site.id)
    text = site_yaml(model, source)
    others = [p for p in yaml_files(config_dir / "sites") if p != target]
    with tempfile.TemporaryDirectory(prefix="clausewatch-import-") as scratch:
        candidate = Path(scratch) / target.name
        candidate.write_text(text, encoding="utf-8")
        loaded, problems = load_files([*others, candidate], yaml_files(config_dir / "clauses"))
    if problems:
        raise ConfigError(
            [
                Problem(
                    str(target) if p.file == str(candidate) else p.file, p.where, p.message, p.line
                )
                for p in problems
            ]
        )
    if loaded.sites.get(model.site.id) != model:
        raise AssertionError("the site file written does not read back as the workbook's model")
    return ImportPlan(model, before, site_diff(before, model), target, text)


def apply_import(plan: ImportPlan) -> bool:
    """Writes the planned site file (the previous one kept as `*.bak`); False when the import
    changes nothing and no file was written."""
    if not plan.diff.empty:
        if plan.target.exists():
            _atomic_write(
                plan.target.with_name(plan.target.name + ".bak"), plan.target.read_bytes()
            )
        _atomic_write(plan.target, plan.text.encode("utf-8"))
        return True
    return False

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

import datetime as dt
import io
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import yaml
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from config import csvcells, spreadsheets
from config.documents import ConfigError, Problem
from config.files import load_files, load_site, yaml_files
from config.sitebook import (
    HEADER_ROWS,
    SHEETS,
    SHEETS_BY_KEY,
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
from config.spreadsheets import XLSX_SUFFIXES, Cell, Header, Limits, SpreadsheetError, Table
from rules.site import SiteModel

LIMITS = Limits()  # the defaults take a site of 100,000 spaces


def _problem(sheet: str, row: int, column: str, zh: str, en: str) -> SheetProblem:
    return SheetProblem(sheet, row, column, zh, en)


def _fail(error: SpreadsheetError, sheet: str = "") -> WorkbookError:
    return WorkbookError([_problem(error.sheet or sheet, 0, "", error.zh, error.en)])


# ---- reading ----


def read_workbook(path: Path, limits: Limits = LIMITS) -> WorkbookRows:
    """The data rows of each sheet of an .xlsx file, a folder of CSV files or a zip of them,
    with the problems of its cells (a formula, an unknown column) named by sheet, row and
    column. Raises WorkbookError for a file that cannot be read as a workbook at all."""
    try:
        if path.is_dir():
            return _read_csv_folder(path, limits)
        spreadsheets.refuse_macros(path.name)
        suffix = path.suffix.lower()
        if suffix in spreadsheets.XLSX_SUFFIXES:
            return _read_xlsx(path, limits)
        if suffix == ".zip":
            return _read_csv_zip(path, limits)
    except SpreadsheetError as exc:
        raise _fail(exc) from exc
    if suffix == ".csv":
        raise WorkbookError(
            [
                _problem(
                    "",
                    0,
                    "",
                    "CSV 须为每张表一个文件，放在一个文件夹或 zip 中",
                    "CSV comes as one file per sheet, in a folder or a zip",
                )
            ]
        )
    raise WorkbookError(
        [
            _problem(
                "",
                0,
                "",
                f"不支持的文件类型 {suffix!r}：请用 .xlsx、.zip 或文件夹",
                f"unsupported file type {suffix!r}: use .xlsx, .zip or a folder of CSV files",
            )
        ]
    )


def _read_xlsx(path: Path, limits: Limits) -> WorkbookRows:
    with spreadsheets.read_xlsx(path, limits, HEADER_ROWS) as tables:
        problems: list[SheetProblem] = []
        found: dict[str, Table] = {}
        for table in tables:
            sheet = _sheet_named(table.name)
            if sheet is None:
                problems.append(_unknown_sheet(table.name))
                continue
            found[sheet.key] = table
        return _tables(found, problems)


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
    spreadsheets.check_size(path.stat().st_size, limits)
    texts: dict[str, bytes] = {}
    problems: list[SheetProblem] = []
    try:
        with zipfile.ZipFile(path) as archive:
            spreadsheets.check_zip(archive, limits, xlsx=False)
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
        raise SpreadsheetError(
            f"不是有效的 zip 文件：{exc}", f"not a valid zip file: {exc}"
        ) from exc
    return _csv_tables(texts, limits, problems)


def _csv_tables(
    texts: Mapping[str, bytes], limits: Limits, problems: list[SheetProblem]
) -> WorkbookRows:
    tables = {
        key: spreadsheets.read_csv(data, limits, HEADER_ROWS, f"{key}.csv")
        for key, data in texts.items()
    }
    try:
        return _tables(tables, problems)
    except SpreadsheetError as exc:  # a CSV file found broken while its rows are read
        raise _fail(exc, exc.sheet.removesuffix(".csv")) from exc


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


def _tables(tables: Mapping[str, Table], problems: list[SheetProblem]) -> WorkbookRows:
    found: dict[str, SheetRows] = {}
    for key, table in tables.items():
        found[key] = _sheet_rows(SHEETS_BY_KEY[key], table, problems)
    for sheet in SHEETS:
        if sheet.required and sheet.key not in found:
            problems.append(
                _problem(sheet.key, 0, "", f"缺少工作表 {sheet.title}", "the sheet is missing")
            )
    return WorkbookRows(found, problems)


def _sheet_rows(sheet: Sheet, table: Table, problems: list[SheetProblem]) -> SheetRows:
    """The data rows of one sheet, by the English keys of its second header row."""
    header = Header([], [])
    data: SheetRows = []
    before = len(problems)

    def column(index: int) -> str:
        return (header.name(index) or f"#{index}") if index else ""

    for row in table.rows:
        if len(problems) - before >= 100:
            problems.append(
                _problem(
                    sheet.key, row.number, "", "错误过多，停止检查", "too many problems; stopped"
                )
            )
            break
        for problem in row.problems:
            problems.append(
                _problem(sheet.key, row.number, column(problem.column), problem.zh, problem.en)
            )
        if row.number == HEADER_ROWS:
            header = spreadsheets.header_columns(row.cells, {c.key: c.key for c in sheet.columns})
            problems.extend(
                _problem(sheet.key, row.number, f"#{p.column}", p.zh, p.en) for p in header.problems
            )
        if row.number <= HEADER_ROWS:
            continue
        values: dict[str, Cell] = {}
        for index, (value, key) in enumerate(zip_longest(row.cells, header.columns), start=1):
            if value is None:
                continue
            if key is None:
                problems.append(
                    _problem(
                        sheet.key,
                        row.number,
                        column(index),
                        "此列没有表头（第 2 行的英文键）",
                        "a value in a column without a key in header row 2",
                    )
                )
                continue
            values[key] = value
        if values:
            data.append((row.number, values))
    if not header.columns and len(problems) == before:
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


# ---- writing ----


def write_workbook(model: SiteModel | None, path: Path) -> None:
    """Writes the workbook of `model` (None: the empty template) as .xlsx, as a zip of CSV files
    (`.zip`), or as CSV files into a folder (any other path)."""
    rows = _rows(model)
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


def _rows(model: SiteModel | None) -> Rows:
    return site_rows(model) if model is not None else {s.key: [] for s in SHEETS}


def workbook_bytes(model: SiteModel | None) -> bytes:
    """The .xlsx workbook of `model` (None: the empty template) as `write_workbook` writes it
    (the API's export and template downloads)."""
    return _xlsx_bytes(_rows(model))


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
    return plan_model(site_from_rows(book), config_dir, source)


def plan_model(model: SiteModel, config_dir: Path, source: str) -> ImportPlan:
    """`plan_import` of a site model already read (a site revision applied at its effective
    time is planned again against the directory as it is then). Raises ConfigError."""
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

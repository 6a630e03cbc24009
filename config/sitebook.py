"""The site model as a workbook: one sheet per kind (site, spaces, devices, metrics, parties,
contacts, assignments), for bulk import and export (`clausewatch site import|export|template`,
docs/config-formats.md, "Site workbook").

This module is the mapping only: a `SiteModel` to rows (`site_rows`) and rows back to a
`SiteModel` (`site_from_rows`), validated by the same model as a site YAML file, with every
problem named by sheet, row and column (`SheetProblem`, Chinese first); and the difference
between two models by kind (`site_diff`). Reading and writing files (xlsx, CSV, the YAML file
an import writes) is `config/sitefiles.py`.

Each sheet has two header rows: Chinese names (row 1), then the English keys (row 2) that
identify the columns; data starts at row 3. Small collections live in one cell: lists as
`a, b` (`,` or `，`), mappings as `key=value; key=value` (`;` or `；`), a season as
`06-01..09-30`, durations as `15m`, `1h30m` or seconds.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from config.documents import YamlDocument, located_problems, parse_loc, validation_problems
from config.spreadsheets import Cell
from rules.site import Assignment, Device, MetricSpec, Party, SiteInfo, SiteModel, Space

# A cell as read from a file: text (CSV, text cells) or what a spreadsheet typed it as.
HEADER_ROWS = 2  # row 1: Chinese, row 2: English keys; data from row 3


@dataclass(frozen=True)
class Column:
    key: str  # the English key of row 2, the model's field where there is one
    zh: str  # the Chinese header of row 1


@dataclass(frozen=True)
class Sheet:
    key: str  # English; the CSV file is `{key}.csv`
    zh: str
    columns: tuple[Column, ...]
    required: bool = False

    @property
    def title(self) -> str:
        """The worksheet's name: Chinese, then the English key (`空间 spaces`)."""
        return f"{self.zh} {self.key}"

    def column(self, key: str) -> Column:
        for column in self.columns:
            if column.key == key:
                return column
        raise KeyError(key)

    def letter(self, key: str) -> str:
        """The spreadsheet letter of a column (A, B, ...)."""
        index = [c.key for c in self.columns].index(key)
        return _letter(index)


def _letter(index: int) -> str:
    text = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        text = chr(ord("A") + rest) + text
    return text


def _sheet(key: str, zh: str, columns: str, *, required: bool = False) -> Sheet:
    pairs = [part.split(":") for part in columns.split()]
    return Sheet(key, zh, tuple(Column(k, z) for k, z in pairs), required)


SITE = _sheet(
    "site",
    "站点",
    "id:站点编号 name:名称 timezone:时区 grid_region:电网区域 emission_series:排放因子序列 "
    "holidays:节假日规则 extra_holidays:额外休息日 extra_workdays:额外工作日 seasons:季节 "
    "org:组织路径 public:公开页面",
    required=True,
)
SPACES = _sheet(
    "spaces",
    "空间",
    "id:空间编号 name:名称 type:类型 parent:上级空间 tags:标签 area_m2:面积(m²) "
    "occupants:人数 last_done:上次完成",
    required=True,
)
DEVICES = _sheet("devices", "设备", "id:设备编号 space:所在空间 kind:设备类型 parent:上级表计")
METRICS = _sheet(
    "metrics",
    "指标",
    "device:设备编号 metric:指标 unit:单位 range_min:量程下限 range_max:量程上限 "
    "cumulative:累计量 carrier:能源品种 states:状态值 max_gap:最长间隔 decimals:小数位数",
)
PARTIES = _sheet("parties", "责任方", "id:责任方编号 name:名称 kind:类型")
CONTACTS = _sheet("contacts", "联系方式", "party:责任方编号 key:项目 value:内容")
ASSIGNMENTS = _sheet(
    "assignments",
    "责任分配",
    "party:责任方编号 space:空间编号 domain:条款领域 role:角色 level:级别 "
    "valid_from:生效时间 valid_to:失效时间",
)
SHEETS: tuple[Sheet, ...] = (SITE, SPACES, DEVICES, METRICS, PARTIES, CONTACTS, ASSIGNMENTS)
SHEETS_BY_KEY = {sheet.key: sheet for sheet in SHEETS}


# ---- problems ----


@dataclass(frozen=True)
class SheetProblem:
    """One thing wrong in a workbook: where (sheet, row, column; row 0 or column "" for the
    sheet or row as a whole) and what, in Chinese and in English."""

    sheet: str  # the sheet's key (`spaces`); "" for the workbook as a whole
    row: int
    column: str  # the column's key (`area_m2`)
    zh: str
    en: str

    def where(self) -> str:
        if not self.sheet:
            return "工作簿 workbook"
        sheet = SHEETS_BY_KEY.get(self.sheet)
        parts = [sheet.title if sheet else self.sheet]
        if self.row:
            parts.append(f"第 {self.row} 行 row {self.row}")
        if self.column:
            letter = ""
            if sheet is not None and self.column in [c.key for c in sheet.columns]:
                letter = f"{sheet.letter(self.column)} 列 "
            parts.append(f"{letter}{self.column}")
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"{self.where()}: {self.zh} / {self.en}"


class WorkbookError(Exception):
    """A workbook that cannot become a site model; `problems` names each place."""

    def __init__(self, problems: Sequence[SheetProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# English messages of the model's checks (rules/site.py, pydantic) and their Chinese.
_ZH_MESSAGES: tuple[tuple[str, str], ...] = (
    ("required, but missing", "必填项为空"),
    ("duplicate id", "编号重复"),
    ("unknown space", "未知空间（空间表中没有此编号）"),
    ("unknown device", "未知设备（设备表中没有此编号）"),
    ("unknown party", "未知责任方（责任方表中没有此编号）"),
    ("has a cycle", "空间层级成环"),
    ("should match pattern", "格式不符：编号只能用小写字母、数字、- 和 _，以字母或数字开头"),
    ("needs a UTC offset", "时间须带 UTC 偏移，例如 2026-01-01T00:00:00+08:00"),
    ("valid_to must be after valid_from", "失效时间须晚于生效时间"),
    ("unknown IANA timezone", "未知时区（IANA 名称，例如 Asia/Shanghai）"),
    ("expected MM-DD", "日期须为 MM-DD，例如 06-01"),
    ("range must be", "量程下限须小于上限"),
    ("must be cumulative", "有能源品种的指标须为累计量"),
    ("webhook", "webhook 须为通知目标的名称，不能是网址"),
    ("not a duration", "时长格式不符，例如 90s、15m、2h、1h30m"),
    ("greater than or equal", "数值过小"),
    ("greater than", "数值须大于下限"),
    ("less than or equal", "数值过大"),
    ("valid integer", "须为整数"),
    ("valid number", "须为数字"),
    ("valid boolean", "须为 true/false（是/否）"),
    ("valid datetime", "须为带时区的日期时间"),
    ("valid date", "须为日期 YYYY-MM-DD"),
    ("Input should be", "取值不在允许范围内"),
)


def zh_message(en: str) -> str:
    """The Chinese for an English problem message (a general one when none is known)."""
    for needle, zh in _ZH_MESSAGES:
        if needle in en:
            return zh
    return "取值无效"


# ---- cells ----

_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = {"true", "是", "1", "yes"}
_FALSE = {"false", "否", "0", "no"}


def number_text(value: float) -> str:
    """A number as written in a cell: `12000` for 12000.0, else Python's shortest form."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def duration_text(seconds: float) -> str:
    """Seconds as a duration the model reads back exactly: `1h30m`, `15m`, `45s`; a fraction
    of a second as the number of seconds."""
    if not float(seconds).is_integer():
        text = number_text(seconds)
        return text if "e" in text else f"{text}s"  # 5430.5s; 1e-05 (seconds) as a number
    rest = int(seconds)
    if rest == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _time_text(value: dt.datetime | dt.date) -> str:
    return value.isoformat()


def _cell_text(value: Cell) -> str | None:
    """A cell as text, None when empty. A spreadsheet's number 201 in a text column is `201`;
    its date (no time of day) `2026-05-06`."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None and value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    text = value.strip()
    return text or None


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day_or_text(text: str) -> dt.date | str:
    """A date written alone as a date (pydantic would read `2026-11-20` as a datetime without
    an offset where either may go); anything else as written, for the model to judge."""
    if _DAY.fullmatch(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            return text
    return text


def _seconds_or_text(value: Cell) -> Cell:
    """A duration cell: a bare number (`1e-05`, a CSV's `900`) is seconds."""
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return float(value)
    return value


def _split(text: str, separators: str) -> list[str]:
    return [part.strip() for part in re.split(f"[{separators}]", text) if part.strip()]


@dataclass
class _Reader:
    """Turns the cells of one row into model input, collecting problems at their cells."""

    sheet: Sheet
    problems: list[SheetProblem]

    def problem(self, row: int, column: str, zh: str, en: str) -> None:
        self.problems.append(SheetProblem(self.sheet.key, row, column, zh, en))

    def text(self, row: int, cells: Mapping[str, Cell], key: str) -> str | None:
        return _cell_text(cells.get(key))

    def value(self, row: int, cells: Mapping[str, Cell], key: str) -> Cell:
        """A scalar as the model will take it: numbers stay numbers, empty is None."""
        value = cells.get(key)
        if isinstance(value, str):
            return value.strip() or None
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return _cell_text(value)
        return value

    def flag(self, row: int, cells: Mapping[str, Cell], key: str) -> bool | None:
        value = cells.get(key)
        if value is None or isinstance(value, bool):
            return value
        text = _cell_text(value)
        if text is None:
            return None
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        self.problem(row, key, "须为 true/false（是/否）", f"expected true or false, got {text!r}")
        return None

    def items(self, row: int, cells: Mapping[str, Cell], key: str) -> list[str]:
        text = self.text(row, cells, key)
        return [] if text is None else _split(text, ",，")

    def pairs(self, row: int, cells: Mapping[str, Cell], key: str) -> dict[str, str]:
        text = self.text(row, cells, key)
        found: dict[str, str] = {}
        for part in [] if text is None else _split(text, ";；"):
            name, equals, value = part.partition("=")
            if not equals or not name.strip() or not value.strip():
                self.problem(
                    row,
                    key,
                    f"须为 名称=值，多项以分号分隔（{part!r}）",
                    f"expected name=value pairs separated by ';', got {part!r}",
                )
                continue
            if name.strip() in found:
                self.problem(
                    row, key, f"{name.strip()!r} 出现两次", f"{name.strip()!r} appears twice"
                )
            found[name.strip()] = value.strip()
        return found


# ---- model to rows ----

OutCell = str | int | float | None  # what an export writes in a cell
Rows = dict[str, list[list[OutCell]]]  # sheet key -> data rows, cells in column order


def _row(sheet: Sheet, values: Mapping[str, OutCell]) -> list[OutCell]:
    unknown = values.keys() - {c.key for c in sheet.columns}
    assert not unknown, unknown
    return [values.get(c.key) for c in sheet.columns]


def _listed(items: Iterable[object]) -> str | None:
    text = ", ".join(str(i) for i in items)
    return text or None


def _paired(items: Mapping[str, str]) -> str | None:
    text = "; ".join(f"{k}={v}" for k, v in items.items())
    return text or None


def _number(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() and abs(value) < 1e15 else value


_DEFAULT_METRIC = MetricSpec(unit="-")


def site_rows(model: SiteModel) -> Rows:
    """The rows of each sheet for `model` (what an export writes below the headers)."""
    info = model.site
    rows: Rows = {sheet.key: [] for sheet in SHEETS}
    seasons = {name: f"{s.start}..{s.end}" for name, s in info.seasons.items()}
    rows["site"].append(
        _row(
            SITE,
            {
                "id": info.id,
                "name": info.name,
                "timezone": info.timezone,
                "grid_region": info.grid_region,
                "emission_series": info.emission_series,
                "holidays": info.holidays.kind,
                "extra_holidays": _listed(d.isoformat() for d in info.holidays.extra_holidays),
                "extra_workdays": _listed(d.isoformat() for d in info.holidays.extra_workdays),
                "seasons": _paired(seasons),
                "org": _listed(info.org),
                "public": "true" if info.public else None,
            },
        )
    )
    for space in model.spaces:
        done = {key: _time_text(when) for key, when in space.last_done.items()}
        rows["spaces"].append(
            _row(
                SPACES,
                {
                    "id": space.id,
                    "name": space.name or None,
                    "type": space.type,
                    "parent": space.parent,
                    "tags": _listed(space.tags),
                    "area_m2": _number(space.area_m2),
                    "occupants": space.occupants,
                    "last_done": _paired(done),
                },
            )
        )
    for device in model.devices:
        rows["devices"].append(
            _row(
                DEVICES,
                {
                    "id": device.id,
                    "space": device.space,
                    "kind": device.kind,
                    "parent": device.parent,
                },
            )
        )
        for name, spec in device.metrics.items():
            states = {state: number_text(v) for state, v in spec.states.items()}
            low, high = spec.range if spec.range is not None else (None, None)
            rows["metrics"].append(
                _row(
                    METRICS,
                    {
                        "device": device.id,
                        "metric": name,
                        "unit": spec.unit,
                        "range_min": _number(low),
                        "range_max": _number(high),
                        "cumulative": "true" if spec.cumulative else None,
                        "carrier": spec.carrier,
                        "states": _paired(states),
                        "max_gap": (
                            None
                            if spec.max_gap == _DEFAULT_METRIC.max_gap
                            else duration_text(spec.max_gap)
                        ),
                        "decimals": spec.decimals,
                    },
                )
            )
    for party in model.parties:
        rows["parties"].append(
            _row(PARTIES, {"id": party.id, "name": party.name, "kind": party.kind})
        )
        for key, value in party.contacts.items():
            rows["contacts"].append(_row(CONTACTS, {"party": party.id, "key": key, "value": value}))
    for a in model.assignments:
        rows["assignments"].append(
            _row(
                ASSIGNMENTS,
                {
                    "party": a.party,
                    "space": a.space,
                    "domain": a.domain,
                    "role": a.role,
                    "level": a.level,
                    "valid_from": a.valid_from.isoformat(),
                    "valid_to": None if a.valid_to is None else a.valid_to.isoformat(),
                },
            )
        )
    return rows


# ---- rows to model ----

# Data rows of one sheet: (row number in the file, {column key: cell}).
SheetRows = list[tuple[int, dict[str, Cell]]]


@dataclass
class _Origin:
    """Where each item of the model input came from, to name the cell of a model problem."""

    rows: dict[tuple[str, int], int] = field(default_factory=dict)  # (section, index) -> row
    metric_rows: dict[tuple[int, str], int] = field(default_factory=dict)  # (device, metric)
    contact_rows: dict[tuple[int, str], int] = field(default_factory=dict)  # (party, key)
    site_row: int = HEADER_ROWS + 1


def _drop_empty(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != [] and v != {}}


@dataclass
class WorkbookRows:
    """What a workbook file holds: the data rows of each sheet (by sheet key), and the problems
    found reading its cells (a formula, a column without a key), to report with the model's."""

    sheets: dict[str, SheetRows]
    problems: list[SheetProblem] = field(default_factory=list)


def site_from_rows(book: WorkbookRows) -> SiteModel:
    """The site model in the rows of each sheet, validated as a site file is. Raises
    WorkbookError naming the sheet, row and column of every problem, the reading's first.
    The references between rows (a parent, a device's space) are checked in the same pass."""
    sheets = book.sheets
    problems: list[SheetProblem] = list(book.problems)
    origin = _Origin()
    site_reader = _Reader(SITE, problems)
    site_rows_ = sheets.get("site", [])
    site: dict[str, Any] = {}
    if len(site_rows_) != 1:
        problems.append(
            SheetProblem(
                "site",
                0,
                "",
                f"须恰有一行站点数据（现有 {len(site_rows_)} 行）",
                f"expected exactly one data row, found {len(site_rows_)}",
            )
        )
    else:
        row, cells = site_rows_[0]
        origin.site_row = row
        seasons: dict[str, dict[str, str]] = {}
        for name, span in site_reader.pairs(row, cells, "seasons").items():
            start, dots, end = span.partition("..")
            if not dots:
                site_reader.problem(
                    row,
                    "seasons",
                    f"季节 {name} 须写作 MM-DD..MM-DD",
                    f"season {name}: expected MM-DD..MM-DD, got {span!r}",
                )
                continue
            seasons[name] = {"from": start.strip(), "to": end.strip()}
        holidays = _drop_empty(
            {
                "kind": site_reader.value(row, cells, "holidays"),
                "extra_holidays": site_reader.items(row, cells, "extra_holidays"),
                "extra_workdays": site_reader.items(row, cells, "extra_workdays"),
            }
        )
        site = _drop_empty(
            {
                "id": site_reader.text(row, cells, "id"),
                "name": site_reader.text(row, cells, "name"),
                "timezone": site_reader.text(row, cells, "timezone"),
                "grid_region": site_reader.text(row, cells, "grid_region"),
                "emission_series": site_reader.text(row, cells, "emission_series"),
                "holidays": holidays,
                "seasons": seasons,
                "org": site_reader.items(row, cells, "org"),
                "public": site_reader.flag(row, cells, "public"),
            }
        )

    spaces: list[dict[str, Any]] = []
    reader = _Reader(SPACES, problems)
    for row, cells in sheets.get("spaces", []):
        origin.rows[("spaces", len(spaces))] = row
        spaces.append(
            _drop_empty(
                {
                    "id": reader.text(row, cells, "id"),
                    "name": reader.text(row, cells, "name"),
                    "type": reader.text(row, cells, "type"),
                    "parent": reader.text(row, cells, "parent"),
                    "tags": reader.items(row, cells, "tags"),
                    "area_m2": reader.value(row, cells, "area_m2"),
                    "occupants": reader.value(row, cells, "occupants"),
                    "last_done": {
                        task: _day_or_text(when)
                        for task, when in reader.pairs(row, cells, "last_done").items()
                    },
                }
            )
        )

    devices: list[dict[str, Any]] = []
    device_index: dict[str, int] = {}
    reader = _Reader(DEVICES, problems)
    for row, cells in sheets.get("devices", []):
        device_id = reader.text(row, cells, "id")
        if device_id is not None:
            device_index.setdefault(device_id, len(devices))
        origin.rows[("devices", len(devices))] = row
        devices.append(
            _drop_empty(
                {
                    "id": device_id,
                    "space": reader.text(row, cells, "space"),
                    "kind": reader.text(row, cells, "kind"),
                    "parent": reader.text(row, cells, "parent"),
                }
            )
            | {"metrics": {}}
        )
    reader = _Reader(METRICS, problems)
    for row, cells in sheets.get("metrics", []):
        device_id = reader.text(row, cells, "device")
        metric = reader.text(row, cells, "metric")
        index = device_index.get(device_id or "")
        if device_id is None or metric is None:
            column = "device" if device_id is None else "metric"
            reader.problem(row, column, "必填项为空", "required, but missing")
            continue
        if index is None:
            reader.problem(
                row,
                "device",
                f"未知设备 {device_id!r}（设备表中没有此编号）",
                f"unknown device {device_id!r} (not on the devices sheet)",
            )
            continue
        metrics: dict[str, Any] = devices[index]["metrics"]
        if metric in metrics:
            reader.problem(
                row,
                "metric",
                f"设备 {device_id} 的指标 {metric} 出现两次",
                f"metric {metric!r} of device {device_id!r} appears twice",
            )
            continue
        origin.metric_rows[(index, metric)] = row
        low, high = reader.value(row, cells, "range_min"), reader.value(row, cells, "range_max")
        states: dict[str, Any] = dict(reader.pairs(row, cells, "states"))
        metrics[metric] = _drop_empty(
            {
                # An empty cell is the empty unit (`unit: ""`, a count): the model allows it
                # and an export writes it so, so a round trip keeps it.
                "unit": reader.text(row, cells, "unit") or "",
                "range": None if low is None and high is None else [low, high],
                "cumulative": reader.flag(row, cells, "cumulative"),
                "carrier": reader.text(row, cells, "carrier"),
                "states": states,
                "max_gap": _seconds_or_text(reader.value(row, cells, "max_gap")),
                "decimals": reader.value(row, cells, "decimals"),
            }
        )

    parties: list[dict[str, Any]] = []
    party_index: dict[str, int] = {}
    reader = _Reader(PARTIES, problems)
    for row, cells in sheets.get("parties", []):
        party_id = reader.text(row, cells, "id")
        if party_id is not None:
            party_index.setdefault(party_id, len(parties))
        origin.rows[("parties", len(parties))] = row
        parties.append(
            _drop_empty(
                {
                    "id": party_id,
                    "name": reader.text(row, cells, "name"),
                    "kind": reader.text(row, cells, "kind"),
                }
            )
            | {"contacts": {}}
        )
    reader = _Reader(CONTACTS, problems)
    for row, cells in sheets.get("contacts", []):
        party_id = reader.text(row, cells, "party")
        key = reader.text(row, cells, "key")
        value = reader.text(row, cells, "value")
        index = party_index.get(party_id or "")
        missing = next(
            (c for c, v in (("party", party_id), ("key", key), ("value", value)) if v is None), None
        )
        if missing is not None or key is None or value is None:
            reader.problem(row, missing or "value", "必填项为空", "required, but missing")
            continue
        if index is None:
            reader.problem(
                row,
                "party",
                f"未知责任方 {party_id!r}（责任方表中没有此编号）",
                f"unknown party {party_id!r} (not on the parties sheet)",
            )
            continue
        contacts: dict[str, str] = parties[index]["contacts"]
        if key in contacts:
            reader.problem(
                row,
                "key",
                f"责任方 {party_id} 的联系方式 {key} 出现两次",
                f"contact {key!r} of party {party_id!r} appears twice",
            )
            continue
        origin.contact_rows[(index, key)] = row
        contacts[key] = value

    assignments: list[dict[str, Any]] = []
    reader = _Reader(ASSIGNMENTS, problems)
    for row, cells in sheets.get("assignments", []):
        origin.rows[("assignments", len(assignments))] = row
        assignments.append(
            _drop_empty(
                {
                    "party": reader.text(row, cells, "party"),
                    "space": reader.text(row, cells, "space"),
                    "domain": reader.text(row, cells, "domain"),
                    "role": reader.text(row, cells, "role"),
                    "level": reader.value(row, cells, "level"),
                    "valid_from": reader.text(row, cells, "valid_from"),
                    "valid_to": reader.text(row, cells, "valid_to"),
                }
            )
        )

    data = {
        "site": site,
        "spaces": spaces,
        "devices": devices,
        "parties": parties,
        "assignments": assignments,
    }
    try:
        model = SiteModel.model_validate(data)
    except ValidationError as exc:
        found = validation_problems("workbook", YamlDocument(data, None), exc, SiteModel)
        found += located_problems(Path("workbook"), YamlDocument(data, None), _references(data))
        for problem in found:
            problems.append(_located(parse_loc(problem.where), problem.message, origin))
        model = None
    if problems or model is None:
        raise WorkbookError(_ordered(problems))
    return model


def _references(data: dict[str, Any]) -> list[str]:
    """The site model's checks between rows (ids unique, references resolve, the tree has no
    cycle: `SiteModel._references`), run on the rows as given: pydantic runs them only once
    every row is valid, and a workbook's author should see all problems in one pass."""
    blank = dict.fromkeys(("id", "parent", "space", "party"))  # a missing one is None

    def rows(section: str) -> list[dict[str, Any]]:
        return [blank | item for item in data[section]]

    given = SiteModel.model_construct(
        site=SiteInfo.model_construct(id="", name="", timezone="UTC"),  # not checked here
        spaces=tuple(Space.model_construct(**item) for item in rows("spaces")),
        devices=tuple(Device.model_construct(**item) for item in rows("devices")),
        parties=tuple(Party.model_construct(**item) for item in rows("parties")),
        assignments=tuple(Assignment.model_construct(**item) for item in rows("assignments")),
    )
    check = cast(Callable[[], object], given._references)  # the model validator, called
    try:
        check()
    except ValueError as exc:
        # A value that is missing is reported as missing, not as an unknown or duplicate None.
        return [part for part in str(exc).split("; ") if not part.endswith(" None")]
    return []


def _ordered(problems: list[SheetProblem]) -> list[SheetProblem]:
    order = {sheet.key: i for i, sheet in enumerate(SHEETS)}
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (order.get(p.sheet, -1), p.row))


_SITE_COLUMNS = {"holidays": {"kind": "holidays"}}


def _located(loc: tuple[int | str, ...], message: str, origin: _Origin) -> SheetProblem:
    """The sheet, row and column of a problem the model found at `loc` in its input."""
    zh = zh_message(message)
    if not loc:
        return SheetProblem("", 0, "", zh, message)
    section = loc[0]
    if section == "site":
        column = str(loc[1]) if len(loc) > 1 else ""
        if column == "holidays" and len(loc) > 2 and loc[2] != "kind":
            column = str(loc[2])
        return SheetProblem("site", origin.site_row, column, zh, message)
    index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    row = origin.rows.get((str(section), index)) if index is not None else None
    rest = loc[2:]
    if section == "devices" and index is not None and rest[:1] == ("metrics",) and len(rest) > 1:
        metric_row = origin.metric_rows.get((index, str(rest[1])), 0)
        column = str(rest[2]) if len(rest) > 2 else "metric"
        if column == "metric":  # a check of the whole metric: the field it is about
            column = next(
                (c for c in ("range", "carrier") if message.startswith(f"{c} ") or c in message),
                column,
            )
            column = "range_min" if column == "range" else column
        if column == "range":
            column = "range_max" if rest[3:4] == (1,) else "range_min"
        return SheetProblem("metrics", metric_row, column, zh, message)
    if section == "parties" and index is not None and rest[:1] == ("contacts",):
        key = str(rest[1]) if len(rest) > 1 else "webhook"
        contact_row = origin.contact_rows.get((index, key))
        if contact_row is not None:
            return SheetProblem("contacts", contact_row, "value", zh, message)
    column = str(rest[0]) if rest else ""
    sheet = SHEETS_BY_KEY.get(str(section))
    if not column and sheet is not None:
        # A check of the whole row names its field first ("valid_to must be after ...").
        column = next((c.key for c in sheet.columns if message.startswith(c.key)), "")
    return SheetProblem(str(section), row or 0, column, zh, message)


# ---- what an import changes ----

KINDS = ("space", "device", "party", "assignment")


@dataclass
class KindDiff:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


@dataclass
class SiteDiff:
    """What importing `after` over `before` changes, by kind (ids; an assignment is named by
    everything but its end, as the registry identifies it)."""

    site: str
    new_site: bool
    site_changed: bool  # the site sheet (name, timezone, seasons, ...)
    kinds: dict[str, KindDiff]

    @property
    def empty(self) -> bool:
        return (
            not self.new_site
            and not self.site_changed
            and all(d.empty for d in self.kinds.values())
        )

    def lines(self, limit: int = 20) -> list[str]:
        """The diff for people, Chinese first; at most `limit` ids per list."""
        words = {"added": "新增 added", "changed": "修改 changed", "removed": "删除 removed"}
        kind_zh = {"space": "空间", "device": "设备", "party": "责任方", "assignment": "责任分配"}
        out: list[str] = []
        if self.new_site:
            out.append(f"站点 site {self.site}: 新建 new")
        elif self.site_changed:
            out.append(f"站点 site {self.site}: 修改 changed")
        for kind, diff in self.kinds.items():
            for name in ("added", "changed", "removed"):
                ids: list[str] = getattr(diff, name)
                if not ids:
                    continue
                shown = ", ".join(ids[:limit]) + (
                    f", … (+{len(ids) - limit})" if len(ids) > limit else ""
                )
                out.append(f"{kind_zh[kind]} {kind} {words[name]}: {len(ids)}  {shown}")
        if not out:
            out.append("无变化 no changes")
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            kind: {
                "added": len(d.added),
                "changed": len(d.changed),
                "removed": len(d.removed),
            }
            for kind, d in self.kinds.items()
        }


def assignment_name(values: Mapping[str, Any]) -> str:
    """An assignment's identity as text: `party@space/domain/role/level from valid_from`."""
    return (
        f"{values['party']}@{values['space']}/{values['domain']}/{values['role']}"
        f"/{values['level']} from {values['valid_from']}"
    )


def site_diff(before: SiteModel | None, after: SiteModel) -> SiteDiff:
    """What replacing `before` (None: no such site yet) with `after` adds, changes, removes."""
    kinds: dict[str, KindDiff] = {}
    sections = (
        ("space", "spaces"),
        ("device", "devices"),
        ("party", "parties"),
    )
    for kind, section in sections:
        old = {i.id: i for i in getattr(before, section, ())} if before else {}
        new = {i.id: i for i in getattr(after, section)}
        kinds[kind] = KindDiff(
            added=[i for i in new if i not in old],
            changed=[i for i in new if i in old and old[i] != new[i]],
            removed=[i for i in old if i not in new],
        )
    old_a = {
        assignment_name(a.model_dump(mode="json")): a
        for a in (before.assignments if before else ())
    }
    new_a = {assignment_name(a.model_dump(mode="json")): a for a in after.assignments}
    kinds["assignment"] = KindDiff(
        added=[k for k in new_a if k not in old_a],
        changed=[k for k in new_a if k in old_a and old_a[k] != new_a[k]],
        removed=[k for k in old_a if k not in new_a],
    )
    return SiteDiff(
        site=after.site.id,
        new_site=before is None,
        site_changed=before is not None and before.site != after.site,
        kinds=kinds,
    )

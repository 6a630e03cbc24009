"""The site workbook (config/sitebook.py, config/sitefiles.py): export and import of the site
model as .xlsx and CSV, the diff of a dry run, every problem named by sheet, row and column,
bounded reading that refuses formulas and macros."""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from clausewatch.cli import main
from config import BUNDLED_DIR
from config.documents import ConfigError
from config.files import load_site
from config.sitebook import (
    SHEETS,
    SHEETS_BY_KEY,
    Cell,
    Rows,
    WorkbookError,
    site_from_rows,
    site_rows,
)
from config.sitefiles import (
    Limits,
    apply_import,
    configured_site,
    plan_import,
    read_workbook,
    write_workbook,
)
from rules.site import SiteModel

DEMO = BUNDLED_DIR / "sites" / "demo-hq.yaml"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A configuration directory holding the demo site and the bundled clauses."""
    directory = tmp_path / "config"
    shutil.copytree(BUNDLED_DIR / "clauses", directory / "clauses")
    (directory / "sites").mkdir()
    shutil.copy(DEMO, directory / "sites" / "demo-hq.yaml")
    return directory


def _demo() -> SiteModel:
    return load_site(DEMO)


def _xlsx(path: Path, rows: Rows, extra: Callable[[Workbook], None] | None = None) -> Path:
    """A workbook of `rows` written cell by cell as a person's spreadsheet would hold them."""
    workbook = Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for sheet in SHEETS:
        worksheet = workbook.create_sheet(sheet.title)
        worksheet.append([c.zh for c in sheet.columns])
        worksheet.append([c.key for c in sheet.columns])
        for row in rows[sheet.key]:
            worksheet.append(list(row))
    if extra is not None:
        extra(workbook)
    workbook.save(path)
    return path


def _set(rows: Rows, sheet: str, match: dict[str, Cell], column: str, value: Cell) -> int:
    """Sets `column` of the first row of `sheet` whose cells match; returns its row number in
    the file (two header rows above the data)."""
    keys = [c.key for c in SHEETS_BY_KEY[sheet].columns]
    for index, row in enumerate(rows[sheet]):
        if all(row[keys.index(k)] == v for k, v in match.items()):
            row[keys.index(column)] = value
            return index + 3
    raise AssertionError(f"no row of {sheet} matches {match}")


def _problems(path: Path, config_dir: Path) -> set[tuple[str, int, str]]:
    with pytest.raises(WorkbookError) as caught:
        plan_import(read_workbook(path), config_dir, path.name)
    for problem in caught.value.problems:
        text = str(problem)
        assert problem.zh and problem.en
        assert text.index(problem.zh) < text.index(problem.en)  # Chinese first
    return {(p.sheet, p.row, p.column) for p in caught.value.problems}


# ---- round trip ----


@pytest.mark.parametrize("name", ["demo.xlsx", "demo.zip", "demo-csv"])
def test_importing_the_demo_sites_exported_workbook_is_a_no_op(
    config_dir: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = config_dir / "sites" / "demo-hq.yaml"
    before = target.read_bytes()
    book = tmp_path / name
    assert main(["site", "export", "demo-hq", str(book), "--config-dir", str(config_dir)]) == 0

    plan = plan_import(read_workbook(book), config_dir, book.name)
    assert plan.model == _demo()
    assert plan.diff.empty
    assert plan.diff.lines() == ["无变化 no changes"]
    assert not apply_import(plan)
    argv = ["site", "import", str(book), "--config-dir", str(config_dir), "--no-sync"]
    assert main(argv) == 0
    assert "无变化 nothing to change" in capsys.readouterr().out
    assert target.read_bytes() == before


def test_an_import_writes_the_site_file_that_reads_back_as_the_workbook(
    config_dir: Path, tmp_path: Path
) -> None:
    rows = site_rows(_demo())
    _set(rows, "spaces", {"id": "b1-2f-201"}, "area_m2", 65.5)
    rows["spaces"].append(["b1-2f-204", "204 办公室", "office", "b1-2f", None, 45, 3, None])
    rows["devices"].append(["th-204", "b1-2f-204", "th-sensor", None])
    rows["metrics"].append(["th-204", "temperature", "°C", -20, 60, None, None, None, "5m", 1])
    for sheet in ("parties", "contacts", "assignments"):
        rows[sheet] = [r for r in rows[sheet] if r[0] != "old-clean-team"]
    book = _xlsx(tmp_path / "edited.xlsx", rows)

    plan = plan_import(read_workbook(book), config_dir, book.name)
    counts = plan.diff.counts()
    assert counts["space"] == {"added": 1, "changed": 1, "removed": 0}
    assert counts["device"] == {"added": 1, "changed": 0, "removed": 0}
    assert counts["party"] == {"added": 0, "changed": 0, "removed": 1}
    assert counts["assignment"] == {"added": 0, "changed": 0, "removed": 1}
    assert plan.diff.kinds["party"].removed == ["old-clean-team"]
    target = config_dir / "sites" / "demo-hq.yaml"
    original = target.read_bytes()
    assert apply_import(plan)
    assert (config_dir / "sites" / "demo-hq.yaml.bak").read_bytes() == original
    written = load_site(target)
    assert written == plan.model
    assert written.space("b1-2f-201").area_m2 == 65.5
    assert written.devices[-1].metrics["temperature"].max_gap == 300
    # and exporting it again gives the same workbook
    again = tmp_path / "again.xlsx"
    write_workbook(written, again)
    assert plan_import(read_workbook(again), config_dir, again.name).diff.empty


def test_a_new_site_gets_its_own_file(config_dir: Path, tmp_path: Path) -> None:
    rows = site_rows(_demo())
    _set(rows, "site", {"id": "demo-hq"}, "id", "annex")
    book = _xlsx(tmp_path / "annex.xlsx", rows)
    plan = plan_import(read_workbook(book), config_dir, book.name)
    assert plan.diff.new_site and plan.target == config_dir / "sites" / "annex.yaml"
    assert apply_import(plan)
    assert configured_site(config_dir, "annex")[0] == plan.model


def test_the_template_has_chinese_and_english_headers_and_no_rows(tmp_path: Path) -> None:
    assert main(["site", "template", str(tmp_path / "template.xlsx")]) == 0
    workbook = load_workbook(tmp_path / "template.xlsx", read_only=True)
    assert workbook.sheetnames == [s.title for s in SHEETS]
    spaces = list(workbook["空间 spaces"].iter_rows(values_only=True))
    assert spaces[0][:3] == ("空间编号", "名称", "类型")
    assert spaces[1][:3] == ("id", "name", "type")
    assert len(spaces) == 2
    with pytest.raises(WorkbookError) as caught:  # empty: the site row is missing
        site_from_rows(read_workbook(tmp_path / "template.xlsx"))
    assert ("site", 0, "") in {(p.sheet, p.row, p.column) for p in caught.value.problems}


# ---- cells a spreadsheet would run ----


def test_text_that_looks_like_a_formula_round_trips_as_text(
    config_dir: Path, tmp_path: Path
) -> None:
    model = _demo()
    parties = list(model.parties)
    parties[0] = parties[0].model_copy(
        update={"name": '=HYPERLINK("http://x","y")', "contacts": {"note": "'=1+1", "tel": "+86"}}
    )
    model = model.model_copy(update={"parties": tuple(parties)})
    for name in ("book.xlsx", "book.zip"):
        write_workbook(model, tmp_path / name)
        assert site_from_rows(read_workbook(tmp_path / name)) == model
    with zipfile.ZipFile(tmp_path / "book.zip") as archive:
        parties_csv = archive.read("parties.csv").decode("utf-8-sig")
        contacts_csv = archive.read("contacts.csv").decode("utf-8-sig")
    assert "'=HYPERLINK" in parties_csv
    assert "''=1+1" in contacts_csv and "'+86" in contacts_csv
    cell = load_workbook(tmp_path / "book.xlsx")["责任方 parties"]["B3"]
    assert cell.data_type == "s" and cell.value.startswith("=HYPERLINK")


def test_formula_cells_and_macros_are_refused(config_dir: Path, tmp_path: Path) -> None:
    rows = site_rows(_demo())

    def formula(workbook: Workbook) -> None:
        workbook["空间 spaces"]["F3"] = "=SUM(1,2)"

    book = _xlsx(tmp_path / "formula.xlsx", rows, formula)
    assert ("spaces", 3, "area_m2") in _problems(book, config_dir)

    folder = tmp_path / "csv"
    write_workbook(_demo(), folder)
    text = (folder / "parties.csv").read_text(encoding="utf-8-sig")
    (folder / "parties.csv").write_text(text.replace("王丽", "=1+1"), encoding="utf-8")
    assert ("parties", 3, "name") in _problems(folder, config_dir)

    macro = tmp_path / "macro.xlsx"
    shutil.copy(_xlsx(tmp_path / "plain.xlsx", rows), macro)
    with zipfile.ZipFile(macro, "a") as archive:
        archive.writestr("xl/vbaProject.bin", b"\0" * 16)
    with pytest.raises(WorkbookError, match=r"vbaProject\.bin"):
        read_workbook(macro)
    with pytest.raises(WorkbookError, match="macros"):
        read_workbook(tmp_path / "book.xlsm")


def test_csv_saved_by_excel_in_chinese_reads_as_gb18030(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    write_workbook(_demo(), folder)
    for path in folder.iterdir():
        path.write_bytes(path.read_text(encoding="utf-8-sig").encode("gb18030"))
    assert site_from_rows(read_workbook(folder)) == _demo()
    (folder / "site.csv").write_bytes(b"\xff\xff\xff")
    with pytest.raises(WorkbookError, match="neither UTF-8 nor GB18030"):
        read_workbook(folder)


def test_reading_is_bounded(tmp_path: Path) -> None:
    book = tmp_path / "demo.xlsx"
    write_workbook(_demo(), book)
    problems = read_workbook(book, Limits(max_rows=10)).problems
    assert {(p.sheet, p.row) for p in problems} >= {("spaces", 13), ("devices", 13)}
    with pytest.raises(WorkbookError, match="too large"):
        read_workbook(book, Limits(max_file_bytes=1_000))
    with pytest.raises(WorkbookError, match="unpacks to too much"):
        read_workbook(book, Limits(max_unpacked_bytes=10_000))
    problems = read_workbook(book, Limits(max_cell_chars=5)).problems
    assert ("spaces", 3, "name") not in {(p.sheet, p.row, p.column) for p in problems}  # 主楼
    assert ("spaces", 4, "id") not in {(p.sheet, p.row, p.column) for p in problems}  # b1-1f
    assert ("spaces", 5, "id") in {(p.sheet, p.row, p.column) for p in problems}
    assert "longer than 5 characters" in str(problems[0])
    (tmp_path / "junk.xlsx").write_bytes(b"not a zip")
    with pytest.raises(WorkbookError, match=r"not a valid \.xlsx"):
        read_workbook(tmp_path / "junk.xlsx")


# ---- every problem at its sheet, row and column ----


def test_cell_problems_are_named_by_sheet_row_and_column(config_dir: Path, tmp_path: Path) -> None:
    rows = site_rows(_demo())
    expected = {
        ("site", 3, "timezone"): ("site", {"id": "demo-hq"}, "timezone", "Mars/Base"),
        ("site", 3, "seasons"): ("site", {"id": "demo-hq"}, "seasons", "cooling=06-01"),
        ("site", 3, "public"): ("site", {"id": "demo-hq"}, "public", "maybe"),
    }
    found_rows: dict[tuple[str, str], int] = {}
    for (sheet, _, column), (_, match, col, value) in expected.items():
        found_rows[(sheet, column)] = _set(rows, sheet, match, col, value)
    wanted = {
        ("spaces", _set(rows, "spaces", {"id": "b1-1f"}, "area_m2", -5), "area_m2"),
        ("spaces", _set(rows, "spaces", {"id": "b1-1f-server"}, "occupants", "many"), "occupants"),
        ("spaces", _set(rows, "spaces", {"id": "b1-1f-lobby"}, "tags", "Public!"), "tags"),
        ("spaces", _set(rows, "spaces", {"id": "b1-lift-1"}, "type", None), "type"),
        ("spaces", _set(rows, "spaces", {"id": "b1-2f"}, "last_done", "x"), "last_done"),
        ("spaces", _set(rows, "spaces", {"id": "b1-3f"}, "id", "B1 3F"), "id"),
        ("metrics", _set(rows, "metrics", {"device": "th-201"}, "range_min", 70), "range_min"),
        (
            "metrics",
            _set(rows, "metrics", {"device": "th-202"}, "cumulative", "maybe"),
            "cumulative",
        ),
        ("metrics", _set(rows, "metrics", {"device": "th-203"}, "max_gap", "soon"), "max_gap"),
        ("metrics", _set(rows, "metrics", {"device": "em-main"}, "carrier", "coal"), "carrier"),
        ("metrics", _set(rows, "metrics", {"device": "th-301"}, "device", "ghost"), "device"),
        ("metrics", _set(rows, "metrics", {"device": "ac-201"}, "states", "off"), "states"),
        ("parties", _set(rows, "parties", {"id": "wang-li"}, "kind", "robot"), "kind"),
        ("contacts", _set(rows, "contacts", {"key": "webhook"}, "value", "https://x"), "value"),
        ("contacts", _set(rows, "contacts", {"party": "lift-co"}, "party", "ghost"), "party"),
        (
            "assignments",
            _set(rows, "assignments", {"party": "zhao-gang"}, "valid_from", "2026-01-01T00:00"),
            "valid_from",
        ),
        (
            "assignments",
            _set(rows, "assignments", {"party": "chen-jing"}, "valid_to", "2025-01-01T00:00+08:00"),
            "valid_to",
        ),
        ("assignments", _set(rows, "assignments", {"party": "lift-co"}, "level", -1), "level"),
        ("assignments", _set(rows, "assignments", {"party": "li-ming"}, "role", "boss"), "role"),
    }
    rows["metrics"].append(list(rows["metrics"][-1]))  # a metric twice
    wanted.add(("metrics", len(rows["metrics"]) + 2, "metric"))
    wanted |= {(s, r, c) for (s, c), r in found_rows.items()}

    def header(workbook: Workbook) -> None:
        workbook["设备 devices"]["E2"] = "colour"

    found = _problems(_xlsx(tmp_path / "bad.xlsx", rows, header), config_dir)
    assert wanted | {("devices", 2, "#5")} <= found


def test_reference_problems_are_named_by_sheet_row_and_column(
    config_dir: Path, tmp_path: Path
) -> None:
    rows = site_rows(_demo())
    wanted = {
        ("spaces", _set(rows, "spaces", {"id": "b1-lift-1"}, "parent", "nowhere"), "parent"),
        ("devices", _set(rows, "devices", {"id": "th-203"}, "space", "nowhere"), "space"),
        ("devices", _set(rows, "devices", {"id": "em-2f"}, "parent", "em-9"), "parent"),
        ("devices", _set(rows, "devices", {"id": "lux-303"}, "id", "lux-201"), "id"),
        ("assignments", _set(rows, "assignments", {"party": "lift-co"}, "party", "ghost"), "party"),
        ("assignments", _set(rows, "assignments", {"party": "li-ming"}, "space", "b9"), "space"),
    }
    assert wanted <= _problems(_xlsx(tmp_path / "refs.xlsx", rows), config_dir)

    rows = site_rows(_demo())
    cycle = _set(rows, "spaces", {"id": "b1"}, "parent", "b1-2f")
    assert ("spaces", cycle, "parent") in _problems(_xlsx(tmp_path / "c.xlsx", rows), config_dir)


def test_sheet_problems(config_dir: Path, tmp_path: Path) -> None:
    rows = site_rows(_demo())

    def odd(workbook: Workbook) -> None:
        workbook.create_sheet("Sheet1")
        del workbook["站点 site"]

    book = read_workbook(_xlsx(tmp_path / "odd.xlsx", rows, odd))
    assert [p.en for p in book.problems][:1] == [
        "unknown sheet 'Sheet1' (known: " + ", ".join(s.title for s in SHEETS) + ")"
    ]

    def no_site(workbook: Workbook) -> None:
        del workbook["站点 site"]

    assert ("site", 0, "") in _problems(_xlsx(tmp_path / "nosite.xlsx", rows, no_site), config_dir)
    with pytest.raises(WorkbookError, match="unsupported file type"):
        read_workbook(tmp_path / "site.ods")


def test_a_workbook_that_breaks_a_clause_is_refused_with_the_clause_named(
    config_dir: Path, tmp_path: Path
) -> None:
    rows = site_rows(_demo())
    _set(rows, "site", {"id": "demo-hq"}, "seasons", "cooling=06-01..09-30")
    with pytest.raises(ConfigError) as caught:
        plan_import(read_workbook(_xlsx(tmp_path / "x.xlsx", rows)), config_dir, "x.xlsx")
    assert any("no season 'heating'" in str(p) for p in caught.value.problems)


def test_the_cli_shows_problems_and_the_diff(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = site_rows(_demo())
    row = _set(rows, "spaces", {"id": "b1-1f"}, "area_m2", -5)
    bad = _xlsx(tmp_path / "bad.xlsx", rows)
    assert main(["site", "import", str(bad), "--dry-run", "--config-dir", str(config_dir)]) == 1
    err = capsys.readouterr().err
    assert f"空间 spaces, 第 {row} 行 row {row}, F 列 area_m2: 数值须大于下限" in err

    rows = site_rows(_demo())
    _set(rows, "spaces", {"id": "b1-1f"}, "area_m2", 4100)
    good = _xlsx(tmp_path / "good.xlsx", rows)
    target = config_dir / "sites" / "demo-hq.yaml"
    before = target.read_bytes()
    assert main(["site", "import", str(good), "--dry-run", "--config-dir", str(config_dir)]) == 0
    out = capsys.readouterr().out
    assert "空间 space 修改 changed: 1  b1-1f" in out
    assert target.read_bytes() == before
    assert main(["site", "export", "nowhere", str(tmp_path / "n.xlsx")]) == 1


def test_the_cli_applies_a_new_site_and_refuses_to_change_a_configured_one(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A change of a configured site is a site revision approved by another person
    (`clausewatch site propose`); only a site not configured yet is written at once."""
    rows = site_rows(_demo())
    _set(rows, "spaces", {"id": "b1-1f"}, "area_m2", 4100)
    changed = _xlsx(tmp_path / "changed.xlsx", rows)
    target = config_dir / "sites" / "demo-hq.yaml"
    before = target.read_bytes()
    where = ["--config-dir", str(config_dir), "--no-sync"]
    assert main(["site", "import", str(changed), *where]) == 2
    captured = capsys.readouterr()
    assert "空间 space 修改 changed: 1  b1-1f" in captured.out  # the diff is still shown
    assert "站点已存在" in captured.err and "clausewatch site propose" in captured.err
    assert "approved by another person" in captured.err
    assert target.read_bytes() == before
    assert not (config_dir / "sites" / "demo-hq.yaml.bak").exists()

    _set(rows, "site", {"id": "demo-hq"}, "id", "annex")
    annex = _xlsx(tmp_path / "annex.xlsx", rows)
    assert main(["site", "import", str(annex), *where]) == 0
    assert "已写入 wrote" in capsys.readouterr().out
    written = configured_site(config_dir, "annex")[0]
    assert written is not None and written.space("b1-1f").area_m2 == 4100


# ---- a district's building ----


def _large_site(rooms: int) -> SiteModel:
    """`rooms` rooms on floors of 50, each with a sensor and an HVAC controller (two devices
    a room, three metrics each), 100 parties and 300 assignments on the floors."""
    floors = rooms // 50
    spaces: list[dict[str, object]] = [{"id": "b1", "name": "主楼", "type": "building"}]
    spaces += [{"id": f"f{f}", "type": "floor", "parent": "b1"} for f in range(floors)]
    devices: list[dict[str, object]] = []
    for r in range(rooms):
        spaces.append(
            {
                "id": f"r{r}",
                "name": f"{r} 室",
                "type": "office",
                "parent": f"f{r % floors}",
                "area_m2": 40 + r % 7,
                "occupants": 4,
            }
        )
        devices.append(
            {
                "id": f"s{r}",
                "space": f"r{r}",
                "kind": "th-sensor",
                "metrics": {
                    "temperature": {"unit": "°C", "range": [-20, 60]},
                    "humidity": {"unit": "%", "range": [0, 100]},
                    "co2": {"unit": "ppm", "range": [300, 10000]},
                },
            }
        )
        devices.append(
            {
                "id": f"h{r}",
                "space": f"r{r}",
                "kind": "hvac-controller",
                "metrics": {
                    "hvac_mode": {
                        "unit": "state",
                        "states": {"off": 0, "cooling": 1, "heating": 2},
                    },
                    "occupied": {"unit": "bool", "range": [0, 1]},
                    "window_open": {"unit": "bool", "range": [0, 1]},
                },
            }
        )
    demo = _demo().site.model_dump(by_alias=True)
    return SiteModel.model_validate(
        {
            "site": {**demo, "id": "district-1", "name": "区政务中心"},
            "spaces": spaces,
            "devices": devices,
            "parties": [
                {"id": f"p{i}", "name": f"责任人 {i}", "contacts": {"phone": f"+86-{i:04d}"}}
                for i in range(100)
            ],
            "assignments": [
                {
                    "party": f"p{i % 100}",
                    "space": f"f{i % floors}",
                    "level": i // 100,
                    "valid_from": "2026-01-01T00:00:00+08:00",
                }
                for i in range(300)
            ],
        }
    )


@pytest.mark.slow
def test_a_workbook_of_5000_rooms_and_10000_devices(config_dir: Path, tmp_path: Path) -> None:
    """Timed in BENCHMARKS.md ("Site workbook", bench/site_import.py); here: it imports."""
    model = _large_site(5000)
    assert (len(model.spaces), len(model.devices)) == (5101, 10000)
    book = tmp_path / "district.xlsx"
    write_workbook(model, book)
    rows = read_workbook(book)
    plan = plan_import(rows, config_dir, book.name)  # the dry run
    assert plan.diff.new_site and plan.model == model
    assert len(plan.diff.kinds["device"].added) == 10000
    assert apply_import(plan)  # the file it wrote was read back as `model` by plan_import
    again = plan_import(rows, config_dir, book.name)  # now against the file written
    assert again.before == model
    assert again.diff.empty and not apply_import(again)


def test_every_field_of_the_site_model_round_trips(tmp_path: Path) -> None:
    demo = _demo()
    rich = SiteModel.model_validate(
        {
            "site": {
                **demo.site.model_dump(by_alias=True),
                "holidays": {
                    "kind": "weekends",
                    "extra_holidays": ["2026-05-06", "2026-10-09"],
                    "extra_workdays": ["2026-09-27"],
                },
                "public": True,
            },
            "spaces": [
                {"id": "b1", "type": "building", "tags": ["public", "critical-it"]},
                {
                    "id": "lift",
                    "name": "电梯; 1号, 东=侧",
                    "type": "elevator",
                    "parent": "b1",
                    "area_m2": 2.25,
                    "occupants": 0,
                    "last_done": {
                        "maintenance.done": dt.date(2026, 11, 20),
                        "elevator.maintenance": "2026-11-20T15:00:00+08:00",
                    },
                },
            ],
            "devices": [
                {
                    "id": "m1",
                    "space": "b1",
                    "metrics": {
                        "heat_gj": {
                            "unit": "GJ",
                            "cumulative": True,
                            "carrier": "heat",
                            "max_gap": 5430.5,
                            "decimals": 3,
                        },
                        "mode": {"unit": "state", "states": {"off": 0, "half": 0.5}},
                        "t": {"unit": "°C", "range": [-0.5, 1e6], "max_gap": 90},
                    },
                },
                {"id": "m2", "space": "lift", "kind": "meter", "parent": "m1", "metrics": {}},
            ],
            "parties": [{"id": "p", "name": "-1", "kind": "team", "contacts": {}}],
            "assignments": [
                {
                    "party": "p",
                    "space": "lift",
                    "domain": "special_equipment",
                    "role": "escalation",
                    "level": 3,
                    "valid_from": "2026-01-01T00:00:00+08:00",
                    "valid_to": "2026-06-30T12:30:00+00:00",
                }
            ],
        }
    )
    for name in ("rich.xlsx", "rich.zip", "rich-csv"):
        write_workbook(rich, tmp_path / name)
        assert site_from_rows(read_workbook(tmp_path / name)) == rich, name


def test_cell_and_reference_problems_are_found_in_one_pass(
    config_dir: Path, tmp_path: Path
) -> None:
    rows = site_rows(_demo())
    wanted = {
        ("spaces", _set(rows, "spaces", {"id": "b1-1f"}, "area_m2", -5), "area_m2"),
        ("devices", _set(rows, "devices", {"id": "th-203"}, "space", "nowhere"), "space"),
        ("devices", _set(rows, "devices", {"id": "th-301"}, "space", None), "space"),
        ("spaces", _set(rows, "spaces", {"id": "b1-lift-2"}, "id", None), "id"),
    }
    with pytest.raises(WorkbookError) as caught:
        site_from_rows(read_workbook(_xlsx(tmp_path / "both.xlsx", rows)))
    found = [(p.sheet, p.row, p.column) for p in caught.value.problems]
    assert wanted <= set(found)
    reader_row = next(i for i, r in enumerate(rows["devices"]) if r[0] == "reader-lift-2") + 3
    assert ("devices", reader_row, "space") in found  # its space lost its id: unknown
    assert not [p for p in caught.value.problems if p.en.endswith(" None")]
    assert len(found) == len(set(found))


@pytest.mark.parametrize("name", ["unitless.xlsx", "unitless.zip", "unitless-csv"])
def test_an_empty_metric_unit_round_trips(config_dir: Path, tmp_path: Path, name: str) -> None:
    """A metric without a unit (a count, a state) is `unit: ""` in YAML: its empty cell reads
    back as that, so exporting and importing the site changes nothing."""
    demo = _demo()
    devices = list(demo.devices)
    first = devices[0].model_dump(by_alias=True)
    first["metrics"]["people_count"] = {"unit": ""}
    devices[0] = type(devices[0]).model_validate(first)
    unitless = demo.model_copy(update={"devices": tuple(devices)})
    (config_dir / "sites" / "demo-hq.yaml").unlink()
    book = tmp_path / name
    write_workbook(unitless, book)
    assert site_from_rows(read_workbook(book)) == unitless
    write_workbook(unitless, tmp_path / "first.xlsx")
    apply_import(plan_import(read_workbook(tmp_path / "first.xlsx"), config_dir, "first.xlsx"))
    again = plan_import(read_workbook(book), config_dir, book.name)
    assert again.model == unitless
    assert again.diff.empty

"""Holiday schedule files: the bundled years are the State Council's notices (cross-checked day
by day against the chinese-calendar package's data), never a year without a notice; a
deployment's holidays/ folder replaces or adds years; bad files are refused with their path and
line; `clausewatch check` warns when a judged year, or the next within 60 days, has none."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import chinese_calendar  # type: ignore[import-untyped]
import pytest
from chinese_calendar import constants as package

import config.check
from clausewatch.cli import main
from config import BUNDLED_DIR
from config.check import check_paths
from config.documents import ConfigError
from config.files import load_config_dir
from config.holidays import (
    BUNDLED_HOLIDAYS_DIR,
    holiday_files,
    load_holiday_file,
    load_official_calendar,
)
from rules.holidays import FALLBACK_RULE, FALLBACK_RULE_ZH, OfficialCalendar

# Typed from a notice but absent from the package: the 2006 notice makes Saturday 31 December
# 2005 a working day ("12月31日(星期六)上班"); chinese-calendar has no entry for it.
NOT_IN_THE_PACKAGE = {dt.date(2005, 12, 31)}

# A made-up arrangement for a year without a notice: test data only, never bundled.
INVENTED_2027 = """\
year: 2027
source:
  title: test - an invented arrangement for 2027
holidays:
  - {name: 元旦, from: 2027-01-01, to: 2027-01-03}
workdays:
  - {date: 2027-01-09, for: 元旦}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def package_years() -> set[int]:
    return {day.year for day in package.holidays}


def test_the_bundled_years_are_the_years_with_a_notice_and_no_later() -> None:
    bundled = {int(path.stem) for path in holiday_files(BUNDLED_HOLIDAYS_DIR)}
    assert bundled == package_years() == set(range(2004, 2027))
    assert max(bundled) == 2026  # no notice for 2027 has been published: never invent it


def test_every_bundled_day_agrees_with_the_chinese_calendar_package() -> None:
    calendar = load_official_calendar()
    assert calendar.years == tuple(range(2004, 2027))
    day, last = dt.date(2004, 1, 1), dt.date(2026, 12, 31)
    disagreements = []
    while day <= last:
        if calendar.is_workday(day) != chinese_calendar.is_workday(day):
            disagreements.append(day)
        day += dt.timedelta(days=1)
    assert disagreements == sorted(NOT_IN_THE_PACKAGE)
    # Every day the package names is named here, as a holiday or as a working day.
    holidays = {d for s in calendar.schedules.values() for d in s.holiday_dates()}
    workdays = {d for s in calendar.schedules.values() for d in s.workday_dates()}
    assert set(package.holidays) <= holidays
    assert workdays == set(package.workdays) | NOT_IN_THE_PACKAGE
    # Where the files name more days off, those are weekend days inside a period ("6月4日至6日
    # 放假" where the package lists the 4th and the 6th).
    assert all(d.weekday() >= 5 for d in holidays - set(package.holidays))


def test_each_bundled_file_names_its_notice() -> None:
    for path in holiday_files(BUNDLED_HOLIDAYS_DIR):
        schedule = load_holiday_file(path)
        assert schedule.source.title == f"国务院办公厅关于{schedule.year}年部分节假日安排的通知"
    notice = load_holiday_file(BUNDLED_HOLIDAYS_DIR / "2026.yaml").source
    assert (notice.document, notice.published) == ("国办发明电〔2025〕7号", dt.date(2025, 11, 4))


def test_an_override_for_2027_makes_2027_judged_by_it(tmp_path: Path) -> None:
    write(tmp_path, "holidays/2027.yaml", INVENTED_2027)
    calendar = load_official_calendar(tmp_path)
    assert calendar.years[-1] == 2027
    assert not calendar.is_workday(dt.date(2027, 1, 1))  # a Friday, off by that file
    assert calendar.is_workday(dt.date(2027, 1, 9))  # a Saturday, worked by that file
    assert not load_official_calendar().is_workday(dt.date(2027, 1, 9))


def test_an_override_replaces_the_bundled_year_of_the_same_number(tmp_path: Path) -> None:
    bundled = (BUNDLED_HOLIDAYS_DIR / "2026.yaml").read_text(encoding="utf-8")
    # The deployment's copy says the National Day holiday ends on the 6th.
    write(tmp_path, "holidays/2026.yaml", bundled.replace("to: 2026-10-07", "to: 2026-10-06"))
    assert load_official_calendar(tmp_path).is_workday(dt.date(2026, 10, 7))
    assert not load_official_calendar().is_workday(dt.date(2026, 10, 7))


def test_a_configuration_directory_loads_its_holidays(tmp_path: Path) -> None:
    (tmp_path / "sites").mkdir()
    write(tmp_path, "holidays/2027.yaml", INVENTED_2027)
    loaded = load_config_dir(tmp_path)
    assert isinstance(loaded.calendar, OfficialCalendar)
    assert loaded.calendar.covers(2027) and loaded.calendar.covers(2004)
    write(tmp_path, "holidays/2028.yaml", INVENTED_2027)
    with pytest.raises(ConfigError, match=r"2028\.yaml: year: the schedule for 2027 must be in"):
        load_config_dir(tmp_path)


def test_bad_holiday_files_name_the_file_the_path_and_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "holidays/2027.yaml",
        INVENTED_2027.replace(
            "  - {date: 2027-01-09, for: 元旦}", "  - {date: 2027-01-08, fro: 元旦}"
        ),
    )
    with pytest.raises(ConfigError) as caught:
        load_official_calendar(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: workdays[0].for: required, but missing (line 7)",
        f"{path}: workdays[0].fro: unknown key: did you mean 'for'? (line 7)",
    ]
    write(tmp_path, "holidays/2027.yaml", INVENTED_2027.replace("2027-01-09", "2027-01-08"))
    with pytest.raises(ConfigError) as caught:
        load_official_calendar(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: workdays[0].date: 2027-01-08 is a Friday: an adjusted working day (调休) is "
        "a Saturday or Sunday (line 7)"
    ]


def test_check_validates_holiday_files(tmp_path: Path) -> None:
    write(tmp_path, "holidays/2027.yaml", INVENTED_2027)
    bad = write(tmp_path, "holidays/2029.yaml", INVENTED_2027.replace("year: 2027", "year: 2029"))
    result = check_paths([tmp_path], today=dt.date(2027, 3, 1))
    assert [str(p) for p in result.problems] == [
        f"{bad}: holidays[0].{key}: {day} is not between 2028-12-01 and 2029-12-31 (the year, "
        f"or the December before it) (line {line})"
        for key, day, line in (
            ("from", "2027-01-01", 5),
            ("to", "2027-01-03", 5),
        )
    ] + [
        f"{bad}: workdays[0].date: 2027-01-09 is not between 2028-12-01 and 2029-12-31 (the "
        "year, or the December before it) (line 7)"
    ]
    assert result.holiday_schedules == 1
    assert result.calendar.complete  # 2027 is judged with the file given


def test_cli_check_warns_of_2027_in_chinese_and_english_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(config.check, "today_in_china", lambda: dt.date(2026, 12, 6))
    assert main(["check", str(BUNDLED_DIR)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == (
        f"警告：尚无2027年国务院节假日安排（26天后开始）：自2027-01-01起{FALLBACK_RULE_ZH}，"
        "请据国务院办公厅通知添加 holidays/2027.yaml"
    )
    assert out[1] == (
        "warning: no official holiday schedule for 2027, which starts in 26 day(s): from "
        f"2027-01-01 working days will be judged by the fallback rule ({FALLBACK_RULE}) until "
        "holidays/2027.yaml is added from the State Council notice"
    )
    assert out[2].startswith("ok: 1 site(s), ")
    assert out[2].endswith("official holiday schedules for 23 year(s) (2004–2026)")


def test_cli_check_warns_of_a_judged_year_without_a_schedule(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(config.check, "today_in_china", lambda: dt.date(2027, 2, 1))
    assert main(["check", str(BUNDLED_DIR)]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: no official holiday schedule for 2027: 2027-01-01 to 2027-12-31 judged by "
        f"the fallback rule ({FALLBACK_RULE})" in out
    )


def test_cli_check_is_quiet_with_the_next_years_notice_typed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(config.check, "today_in_china", lambda: dt.date(2026, 12, 6))
    write(tmp_path, "holidays/2027.yaml", INVENTED_2027)
    assert main(["check", str(BUNDLED_DIR), str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("ok: ")


def test_the_documented_example_is_the_bundled_2026(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "config-formats.md").read_text("utf-8")
    (example,) = [
        block.split("```", 1)[0]
        for block in text.split("```yaml\n")[1:]
        if block.startswith("year:")
    ]
    documented = load_holiday_file(write(tmp_path, "2026.yaml", example))
    bundled = load_holiday_file(BUNDLED_HOLIDAYS_DIR / "2026.yaml")
    assert documented == bundled

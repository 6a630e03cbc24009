"""Official holiday schedules as operator files: one YAML file per year, `holidays/YYYY.yaml`,
typed from that year's State Council notice (format: docs/config-formats.md, "Holiday
schedules"; model: `rules.holidays.HolidaySchedule`).

The years whose notice is published are bundled (`config/bundled/holidays/`). A deployment's
configuration directory may have its own `holidays/` folder: a file there replaces the bundled
year of the same number, and adds a year that is not bundled (the next year's notice, typed in
the day it is published). Years with neither are judged by the fallback rule of
rules/holidays.py, and said so.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from config import BUNDLED_DIR
from config.documents import ConfigError, Problem, YamlDocument, read_yaml, validate_document
from rules.holidays import HolidaySchedule, OfficialCalendar, use_official_calendar

HOLIDAYS_SUBDIR = "holidays"
BUNDLED_HOLIDAYS_DIR = BUNDLED_DIR / HOLIDAYS_SUBDIR
_YEAR_FILE = re.compile(r"^(\d{4})\.ya?ml$")
CHINA = ZoneInfo("Asia/Shanghai")


def today_in_china() -> dt.date:
    """The calendar day in China now: the day whose year (and the next) the holiday schedules
    are judged for when nothing else says which days are judged (`clausewatch check`,
    `/healthz`, the dashboard)."""
    return dt.datetime.now(CHINA).date()


def is_holiday_document(doc: YamlDocument) -> bool:
    """A holiday schedule, by its top-level keys (`year` and `holidays`)."""
    return isinstance(doc.data, dict) and "year" in doc.data and "holidays" in doc.data


def validate_holiday_document(path: Path, doc: YamlDocument) -> HolidaySchedule:
    """Validates a parsed schedule; its file must be named after its year (2027.yaml)."""
    schedule = validate_document(path, doc, HolidaySchedule)
    match = _YEAR_FILE.match(path.name)
    if match is None or int(match.group(1)) != schedule.year:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    "year",
                    f"the schedule for {schedule.year} must be in a file named "
                    f"{schedule.year}.yaml",
                    doc.line_of(("year",)),
                )
            ]
        )
    return schedule


def load_holiday_file(path: str | Path) -> HolidaySchedule:
    """One year's schedule, validated. Raises ConfigError."""
    path = Path(path)
    return validate_holiday_document(path, read_yaml(path))


def holiday_files(directory: Path) -> list[Path]:
    """The YAML files directly in `directory` (none when it does not exist)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_schedules(paths: Iterable[Path]) -> tuple[dict[int, HolidaySchedule], list[Problem]]:
    """Loads schedules; a later file for a year replaces an earlier one. Returns what loaded and
    every problem."""
    schedules: dict[int, HolidaySchedule] = {}
    problems: list[Problem] = []
    for path in paths:
        try:
            schedule = load_holiday_file(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        schedules[schedule.year] = schedule
    return schedules, problems


def load_official_calendar(config_dir: str | Path | None = None) -> OfficialCalendar:
    """The bundled schedules, with those of `config_dir/holidays/` replacing or adding years.
    Raises ConfigError with every problem of every file."""
    paths = holiday_files(BUNDLED_HOLIDAYS_DIR)
    if config_dir is not None:
        own = Path(config_dir) / HOLIDAYS_SUBDIR
        if own.resolve() != BUNDLED_HOLIDAYS_DIR.resolve():
            paths += holiday_files(own)
    schedules, problems = load_schedules(paths)
    if problems:
        raise ConfigError(problems)
    return OfficialCalendar(schedules.values())


def install_official_calendar(config_dir: str | Path | None = None) -> OfficialCalendar:
    """Loads the calendar (as `load_official_calendar`) and makes it the one the engine uses."""
    calendar = load_official_calendar(config_dir)
    use_official_calendar(calendar)
    return calendar

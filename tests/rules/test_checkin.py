"""The tasks a space's obligations accept (rules/checkin.py), on the demo site and its bundled
clauses: toilets take a cleaning, lifts a maintenance, the building a patrol and an inspection,
an office none; the same selection the engine binds obligations with."""

from __future__ import annotations

import datetime as dt

import pytest

from config import BUNDLED_DIR
from config.files import load_config_dir
from rules.checkin import space_tasks
from rules.clause import ClauseVersion
from rules.site import SiteModel

Demo = tuple[SiteModel, list[ClauseVersion]]

DAY = dt.date(2026, 9, 30)


@pytest.fixture(scope="module")
def demo() -> Demo:
    loaded = load_config_dir(BUNDLED_DIR)
    return loaded.sites["demo-hq"], loaded.clause_versions()


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("b1-2f-wc-east", [("cleaning.completed", "已清洁", ("toilet.cleaning",))]),
        ("b1-lift-1", [("maintenance.done", "已维保", ("elevator.maintenance",))]),
        (
            "b1",
            [
                ("inspection.done", "已检查", ("fire.check.quarterly",)),
                ("patrol.done", "已巡查", ("fire.patrol.daily",)),
            ],
        ),
        ("b1-1f-canteen", [("sample.retained", "已留样", ("canteen.sample",))]),
        ("b1-2f-201", []),
    ],
)
def test_the_tasks_of_a_space(
    demo: Demo, space: str, expected: list[tuple[str, str, tuple[str, ...]]]
) -> None:
    site, clauses = demo
    tasks = space_tasks(site, space, clauses, DAY)
    assert [(t.event, t.label_zh, t.clauses) for t in tasks] == expected


def test_a_clause_not_yet_in_force_offers_no_task(demo: Demo) -> None:
    site, clauses = demo
    # GB/T 43542-2023's cleaning clause takes effect on 2024-04-01.
    assert space_tasks(site, "b1-2f-wc-east", clauses, dt.date(2024, 3, 31)) == []


def test_an_unknown_space_is_a_key_error(demo: Demo) -> None:
    site, clauses = demo
    with pytest.raises(KeyError):
        space_tasks(site, "nowhere", clauses, DAY)

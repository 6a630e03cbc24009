"""The simulated stream without a broker: determinism, SPEC §2 payloads, and that every violation
and fault knob does what it says (checked against the manifest)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from config import BUNDLED_DIR
from config.documents import ConfigError
from config.files import load_site
from simulators.scenario import Scenario, load_scenario, resolve_at, resolve_start
from simulators.stream import ScheduledMessage, Simulation

SITE = load_site(BUNDLED_DIR / "sites" / "demo-hq.yaml")
CST = dt.timezone(dt.timedelta(hours=8))
MONDAY = dt.datetime(2026, 11, 16, 0, 0, tzinfo=CST).timestamp()  # a working Monday
DAY = 86400.0


def scenario(**knobs: object) -> Scenario:
    base: dict[str, object] = {"name": "t", "site": "demo-hq", "seed": 3, "sample_interval": "5m"}
    return Scenario.model_validate(base | knobs)


def run(sc: Scenario, days: float = 1.0) -> tuple[Simulation, list[ScheduledMessage]]:
    simulation = Simulation(sc, SITE, MONDAY, MONDAY + days * DAY, now=MONDAY + 8 * DAY)
    return simulation, list(simulation.messages())


def decoded(messages: list[ScheduledMessage], device: str) -> list[dict]:
    return [orjson.loads(m.payload) for m in messages if m.device == device]


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_same_seed_gives_a_byte_identical_stream_and_another_seed_does_not() -> None:
    week = load_scenario(BUNDLED_DIR / "scenarios" / "week-faults.yaml")
    _, first = run(week, days=2)
    _, again = run(week, days=2)
    _, other = run(week.model_copy(update={"seed": week.seed + 1}), days=2)
    assert [m.payload for m in first] == [m.payload for m in again]
    assert [m.payload for m in first] != [m.payload for m in other]


def test_bundled_scenarios_fit_the_demo_site() -> None:
    for name in ("demo", "week-faults"):
        loaded = load_scenario(BUNDLED_DIR / "scenarios" / f"{name}.yaml")
        assert loaded.problems_against(SITE) == []


def test_payloads_follow_spec_and_every_device_of_the_site_is_driven() -> None:
    _, messages = run(scenario())
    seen: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        body = orjson.loads(message.payload)
        stamp = dt.datetime.fromisoformat(body["ts"])
        assert stamp.utcoffset() == dt.timedelta(hours=8)
        assert stamp.timestamp() == message.due
        seen[message.device].append(body["seq"])
        device = next(d for d in SITE.devices if d.id == message.device)
        if message.channel == "telemetry":
            assert set(body["metrics"]) == set(device.metrics)
            assert all(math.isfinite(v) for v in body["metrics"].values())
        else:
            assert body["type"] in ("cleaning.completed", "patrol.done")
            assert body["space"] == device.space
    for seqs in seen.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    with_metrics = {d.id for d in SITE.devices if d.metrics}
    assert with_metrics <= set(seen)
    toilet_readers = {d.id for d in SITE.devices if d.space.endswith(("wc-east", "wc-west"))}
    assert toilet_readers <= set(seen)


def test_a_rerun_of_the_same_time_repeats_seqs_and_a_later_start_continues_above() -> None:
    sc = scenario()
    first = list(Simulation(sc, SITE, MONDAY, MONDAY + 3600, now=MONDAY + DAY).messages())
    later = list(Simulation(sc, SITE, MONDAY + 3600, MONDAY + 7200, now=MONDAY + DAY).messages())
    last_seq = max(orjson.loads(m.payload)["seq"] for m in first if m.device == "th-201")
    assert min(orjson.loads(m.payload)["seq"] for m in later if m.device == "th-201") > last_seq


def test_overcooling_holds_the_meeting_room_at_24_while_the_unit_reports_cooling() -> None:
    knob = {"kind": "overcooling", "space": "b1-2f-meeting-a", "setpoint": 24,
            "from": "workday 1 08:00", "to": "workday 1 18:30"}  # fmt: skip
    simulation, messages = run(scenario(violations=[knob]))
    [item] = simulation.manifest.of_kind("overcooling")
    assert item.expect == "outside_season"  # November: the cooling rule does not judge
    office_hours = [r for r in decoded(messages, "th-meeting-a") if "T10:" <= r["ts"][10:] < "T18:"]
    assert office_hours and all(23.0 <= r["metrics"]["temperature"] <= 24.5 for r in office_hours)
    modes = [r["metrics"]["hvac_mode"] for r in decoded(messages, "ac-meeting-a")
             if "T09:" <= r["ts"][10:] < "T18:"]  # fmt: skip
    assert set(modes) == {1}


def test_overheating_holds_an_office_at_22_and_normal_offices_stay_compliant() -> None:
    knob = {"kind": "overheating", "space": "b1-2f-202", "setpoint": 22}
    simulation, messages = run(scenario(weather={"mean_c": 6}, violations=[knob]))
    assert simulation.manifest.of_kind("overheating")[0].expect == "violation"

    def office_hours(device: str) -> list[float]:
        return [r["metrics"]["temperature"] for r in decoded(messages, device)
                if "T09:00" <= r["ts"][10:] < "T18:00"]  # fmt: skip

    assert all(t >= 21.3 for t in office_hours("th-202"))
    assert max(office_hours("th-201")) <= 20.2  # heating 20 °C: within the 0.3 °C tolerance


def test_events_skipped_leaves_a_gap_longer_than_the_cleaning_interval() -> None:
    knob = {"kind": "events_skipped", "space": "b1-2f-wc-west", "at": "workday 1 10:00",
            "for": "3h"}  # fmt: skip
    simulation, messages = run(scenario(violations=[knob]))
    [item] = simulation.manifest.of_kind("events_skipped")
    times = [epoch(r["ts"]) for r in decoded(messages, "reader-2f-wc-west")]
    assert not [t for t in times if item.start <= t < item.end]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) > 3 * 3600
    other = [epoch(r["ts"]) for r in decoded(messages, "reader-2f-wc-east")]
    assert max(b - a for a, b in itertools.pairwise(other)) <= 2 * 3600


def test_electricity_overrun_multiplies_the_main_meter_consumption() -> None:
    def used(sc: Scenario) -> float:
        values = [r["metrics"]["energy_kwh"] for r in decoded(run(sc)[1], "em-main")]
        return values[-1] - values[0]

    normal = used(scenario())
    assert used(scenario(violations=[{"kind": "electricity_overrun", "factor": 4}])) == (
        pytest.approx(4 * normal, rel=0.02)
    )
    # Normal use stays inside the monthly quota (5.62 kWh/m² over 12000 m²), with margin.
    assert normal * 30 < 0.9 * 5.62 * 12000


def test_each_fault_lands_where_the_manifest_says() -> None:
    faults = [
        {"kind": "silent", "device": "th-301", "at": "workday 1 10:00", "for": "3h"},
        {"kind": "stuck", "device": "th-302", "metric": "humidity", "at": "workday 1 10:00",
         "for": "3h"},
        {"kind": "spike", "device": "th-303", "metric": "temperature", "at": "workday 1 11:00",
         "count": 2},
        {"kind": "register_reset", "device": "em-2f", "metric": "energy_kwh",
         "at": "workday 1 03:00"},
        {"kind": "duplicate", "device": "th-201", "at": "workday 1 09:00", "count": 5},
        {"kind": "out_of_order", "device": "th-203", "at": "workday 1 09:00", "count": 3},
        {"kind": "malformed", "device": "th-canteen", "at": "workday 1 09:30", "count": 7},
        {"kind": "future_clock", "device": "th-meeting-a", "at": "workday 1 12:00", "count": 3},
    ]  # fmt: skip
    simulation, messages = run(scenario(faults=faults))
    manifest = simulation.manifest
    now = simulation.now

    silent = manifest.of_kind("silent")[0]
    assert silent.count == 36  # 3 h of 5-min readings
    assert not [
        r for r in decoded(messages, "th-301") if silent.start <= epoch(r["ts"]) < silent.end
    ]

    stuck = manifest.of_kind("stuck")[0]
    values = {
        r["metrics"]["humidity"] for r in decoded(messages, "th-302") if r["seq"] in stuck.seqs
    }
    assert len(stuck.seqs) == 36 and len(values) == 1

    spike = manifest.of_kind("spike")[0]
    spiked = [r for r in decoded(messages, "th-303") if r["seq"] in spike.seqs]
    assert len(spiked) == 2 and all(r["metrics"]["temperature"] > 60 for r in spiked)

    reset = manifest.of_kind("register_reset")[0]
    readings = decoded(messages, "em-2f")
    at = next(i for i, r in enumerate(readings) if r["seq"] == reset.seqs[0])
    assert readings[at]["metrics"]["energy_kwh"] < readings[at - 1]["metrics"]["energy_kwh"]
    assert readings[at]["metrics"]["energy_kwh"] < 100

    duplicate = manifest.of_kind("duplicate")[0]
    payloads = [m.payload for m in messages if m.device == "th-201"]
    assert len(payloads) - len(set(payloads)) == 5 == len(duplicate.seqs)

    late = manifest.of_kind("out_of_order")[0]
    delivered = [r["seq"] for r in decoded(messages, "th-203")]
    behind = [b for a, b in itertools.pairwise(delivered) if b < a]
    assert behind == late.seqs

    malformed = manifest.of_kind("malformed")[0]
    bad = 0
    for message in (m for m in messages if m.device == "th-canteen"):
        try:
            body = orjson.loads(message.payload)
            ok = isinstance(body.get("seq"), int) and all(
                isinstance(v, int | float) for v in body["metrics"].values()
            ) and set(body["metrics"]) <= {"temperature", "humidity"}  # fmt: skip
            epoch(body["ts"])
        except (orjson.JSONDecodeError, KeyError, ValueError, AttributeError):
            ok = False
        bad += not ok
    assert bad == malformed.count == 7

    future = manifest.of_kind("future_clock")[0]
    stamped = [r for r in decoded(messages, "th-meeting-a") if r["seq"] in future.seqs]
    assert len(stamped) == 3 and all(epoch(r["ts"]) > now + 300 for r in stamped)


def test_scenario_errors_name_the_path() -> None:
    with pytest.raises(ValueError, match="faults"):
        scenario(faults=[{"kind": "silent", "device": "th-201", "at": "soon", "for": "1h"}])
    with pytest.raises(ValueError, match="extra"):
        scenario(weather={"mean": 3})
    bad = scenario(faults=[{"kind": "stuck", "device": "nope", "metric": "co2", "at": "1h",
                            "for": "1h"}])  # fmt: skip
    assert bad.problems_against(SITE) == ["faults[0].device: unknown device 'nope'"]
    wrong_metric = scenario(faults=[{"kind": "register_reset", "device": "th-201",
                                     "metric": "temperature", "at": "1h"}])  # fmt: skip
    assert "not a register" in wrong_metric.problems_against(SITE)[0]


def test_a_broken_file_is_reported_with_file_and_path(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nsite: demo-hq\nfaults:\n  - {kind: stuck, device: x}\n")
    with pytest.raises(
        ConfigError, match=r"s\.yaml: faults\[0\]\.at: required, but missing \(line 4\)"
    ):
        load_scenario(path)


def test_times_relative_to_the_start() -> None:
    saturday = dt.datetime(2026, 11, 21, 12, 0, tzinfo=CST).timestamp()
    assert (
        resolve_at("workday 1 10:00", saturday, SITE)
        == dt.datetime(2026, 11, 23, 10, 0, tzinfo=CST).timestamp()
    )
    assert (
        resolve_at("day 1 10:00", saturday, SITE)
        == dt.datetime(2026, 11, 22, 10, 0, tzinfo=CST).timestamp()
    )
    assert resolve_at("26h", saturday, SITE) == saturday + 26 * 3600
    # The National Day holidays are no working days (the official holiday schedules).
    assert resolve_start("last-workday 08:30", dt.datetime(
        2026, 10, 5, 12, 0, tzinfo=CST).timestamp(), SITE) == dt.datetime(
        2026, 9, 30, 8, 30, tzinfo=CST).timestamp()  # fmt: skip
    assert resolve_start("-7d", saturday, SITE) == saturday - 7 * DAY
    assert resolve_start("last-workday 08:30 in cooling", saturday, SITE) == dt.datetime(
        2026, 9, 30, 8, 30, tzinfo=CST).timestamp()  # fmt: skip

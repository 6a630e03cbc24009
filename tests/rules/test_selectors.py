"""Which subjects a clause binds to: space types, tags, space subtrees, device ids, exemptions,
and only devices that report the clause's metric."""

from __future__ import annotations

from typing import Any

import pytest

from rules.engine import BindingError, SiteEngine
from rules.verdicts import ViolationStarted

MAX_26 = {"kind": "threshold", "metric": "temperature", "max": 26}


def site(kit: Any) -> Any:
    spaces = [
        {"id": "b1", "type": "building"},
        {"id": "f2", "type": "floor", "parent": "b1"},
        {"id": "f3", "type": "floor", "parent": "b1"},
        {"id": "o201", "type": "office", "parent": "f2"},
        {"id": "o301", "type": "office", "parent": "f3", "tags": ["high-grade"]},
        {"id": "srv", "type": "server-room", "parent": "f3", "tags": ["critical-it"]},
    ]
    devices = [
        kit.sensor("t201", "o201", temperature=kit.TEMPERATURE),
        kit.sensor("t301", "o301", temperature=kit.TEMPERATURE),
        kit.sensor("tsrv", "srv", temperature=kit.TEMPERATURE),
        kit.sensor("h301", "o301", humidity=kit.HUMIDITY),  # no temperature: never a subject
    ]
    return kit.site(spaces=spaces, devices=devices)


@pytest.mark.parametrize(
    ("applies_to", "devices"),
    [
        ({}, {"t201", "t301", "tsrv"}),
        ({"space_types": ["office"]}, {"t201", "t301"}),
        ({"tags": ["high-grade"]}, {"t301"}),
        ({"spaces": ["f3"]}, {"t301", "tsrv"}),  # a space includes its subtree
        ({"devices": ["t201", "h301"]}, {"t201"}),
        ({"exempt": {"space_types": ["server-room"]}}, {"t201", "t301"}),
        ({"exempt": {"tags": ["critical-it"], "devices": ["t201"]}}, {"t301"}),
        ({"spaces": ["b1"], "exempt": {"spaces": ["f3"]}}, {"t201"}),
    ],
)
def test_selector_binds_these_devices(
    kit: Any, applies_to: dict[str, Any], devices: set[str]
) -> None:
    engine = SiteEngine(site(kit), [kit.clause(MAX_26, applies_to=applies_to)], lateness=0)
    assert {subject.device for _, subject in engine.bindings()} == devices


def test_binding_errors_name_the_clause(kit: Any) -> None:
    seasonal = kit.clause(MAX_26, schedule={"season": "monsoon"})
    with pytest.raises(BindingError, match=r"c\.test v1"):
        SiteEngine(site(kit), [seasonal], lateness=0)
    gated = kit.clause({**MAX_26, "when": {"metric": "hvac_mode", "op": "==", "value": "dry"}})
    with pytest.raises(BindingError, match="no named state 'dry'"):
        SiteEngine(site(kit), [gated], lateness=0)


def test_devices_alike_bind_alike_and_the_others_their_own_way(kit: Any) -> None:
    """A state check is worked out once per kind of device (its space type and metrics) and
    reused for the devices alike. A device in another type of space, or whose metrics differ
    (another encoding of a named state, another unit), still gets its own limit, gate and
    unit."""
    spaces = [
        {"id": "b1", "type": "building"},
        {"id": "o1", "type": "office", "parent": "b1"},
        {"id": "o2", "type": "office", "parent": "b1"},
        {"id": "m1", "type": "meeting-room", "parent": "b1"},
        {"id": "o3", "type": "office", "parent": "b1"},
    ]
    usual = {"temperature": kit.TEMPERATURE, "hvac_mode": kit.HVAC}
    recoded = {
        "temperature": {**kit.TEMPERATURE, "unit": "℃"},
        "hvac_mode": {**kit.HVAC, "states": {"off": 0, "cooling": 5, "heating": 6}},
    }
    devices = [
        {"id": "t1", "space": "o1", "metrics": usual},
        {"id": "t2", "space": "o2", "metrics": usual},
        {"id": "t3", "space": "m1", "metrics": usual},
        {"id": "t4", "space": "o3", "metrics": recoded},
    ]
    clause = kit.clause(
        {
            "kind": "threshold",
            "metric": "temperature",
            "max": "$max",
            "when": {"metric": "hvac_mode", "op": "==", "value": "cooling"},
        },
        params={"max": {"default": 26, "unit": "°C"}},
        overrides={"space_types": {"meeting-room": {"max": 24}}},
    )
    engine = SiteEngine(kit.site(spaces=spaces, devices=devices), [clause], lateness=0)

    def started(readings: dict[str, tuple[float, float]], at: float) -> dict[str, Any]:
        for device, (temperature, mode) in readings.items():
            engine.observe(
                device, kit.T0 + at, None, {"temperature": temperature, "hvac_mode": mode}
            )
        engine.advance(kit.T0 + at + 60)
        return {o.subject.device: o for o in engine.drain() if isinstance(o, ViolationStarted)}

    # 25 °C while cooling: above the meeting room's 24, within the offices' 26.
    first = started({"t1": (25.0, 1.0), "t2": (25.0, 1.0), "t3": (25.0, 1.0), "t4": (25.0, 5.0)}, 0)
    assert set(first) == {"t3"}
    assert first["t3"].params["max"] == 24
    # 30 °C: t4 heating (6) is outside its gate, t2 cooling (1) is not; t4 cooling (5) then is.
    second = started({"t2": (30.0, 1.0), "t4": (30.0, 6.0)}, 120)
    assert set(second) == {"t2"}
    assert second["t2"].params["max"] == 26 and second["t2"].unit == "°C"
    third = started({"t4": (30.0, 5.0)}, 240)
    assert set(third) == {"t4"} and third["t4"].unit == "℃"

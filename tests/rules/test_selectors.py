"""Which subjects a clause binds to: space types, tags, space subtrees, device ids, exemptions,
and only devices that report the clause's metric."""

from __future__ import annotations

from typing import Any

import pytest

from rules.engine import BindingError, SiteEngine

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

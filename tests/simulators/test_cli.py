"""`clausewatch simulate` without a broker (--dry-run) and its errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from clausewatch.cli import main


def test_dry_run_prints_topic_and_payload_lines_and_writes_the_manifest(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    manifest = tmp_path / "m.json"
    code = main(
        ["simulate", "week-faults", "--dry-run", "--span", "2h", "--prefix", "x",
         "--start", "2026-11-16T09:00:00+08:00", "--manifest", str(manifest)]
    )  # fmt: skip
    assert code == 0
    lines = capsysbinary.readouterr().out.splitlines()
    assert len(lines) > 500
    topic, payload = lines[0].split(b" ", 1)
    assert topic.startswith(b"x/demo-hq/") and topic.endswith((b"/telemetry", b"/event"))
    assert orjson.loads(payload)["ts"].startswith("2026-11-16T09:")
    injected = orjson.loads(manifest.read_bytes())["injected"]
    assert {item["kind"] for item in injected} >= {"malformed", "silent", "overheating"}


def test_unknown_scenarios_and_bad_options_exit_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "no-such-scenario", "--dry-run"]) == 2
    assert "no scenario 'no-such-scenario'" in capsys.readouterr().err
    assert main(["simulate", "demo", "--fast"]) == 2
    assert "--fast needs --span" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: b\nsite: demo-hq\nfaults:\n  - {kind: silent, device: nope, at: 1h, for: 1h}\n"
    )
    assert main(["simulate", str(broken), "--dry-run"]) == 2
    assert "faults[0].device: unknown device 'nope'" in capsys.readouterr().err

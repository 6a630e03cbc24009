"""Scenario and site files of the simulators are read by the project's one strict YAML loader
(config.documents): a repeated key is an error naming the file and its line, and `off` in a site
file stays the state name "off" (plain YAML 1.1 would make it False)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from clausewatch.cli import main
from config.documents import ConfigError
from simulators.scenario import load_scenario

SITE = """\
site: {id: small, name: Small office, timezone: Asia/Shanghai}
spaces:
  - {id: b1, type: building, area_m2: 1000}
  - {id: r1, type: office, parent: b1, area_m2: 20}
devices:
  - id: ac-1
    space: r1
    metrics:
      hvac_mode: {unit: state, states: {off: 0, cooling: 1}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_repeated_key_in_a_scenario_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: s\nsite: small\nseed: 1\nseed: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    assert "'seed' appears twice" in problem.message and "line 4" in str(problem)


def test_a_scenario_problem_names_the_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: s\nsite: small\nweather:\n  mean: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.where, problem.line) == (str(path), "weather.mean", 4)


def test_the_simulator_reads_off_in_a_site_file_as_a_state_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = write(tmp_path, "site.yaml", SITE)
    scenario = write(tmp_path, "s.yaml", "name: s\nsite: small\nsample_interval: 10m\n")
    command = [
        "simulate",
        str(scenario),
        "--site",
        str(site),
        "--dry-run",
        "--span=1h",
        "--start=-1h",
    ]
    assert main(command) == 0, capsys.readouterr().err
    assert "cw/small/ac-1/telemetry" in capsys.readouterr().out

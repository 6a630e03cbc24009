"""Scenario and site files of the simulators are read by the project's one strict YAML loader
(config.documents): a repeated key is an error naming the file and its line, and `off` in a site
file stays the state name "off" (plain YAML 1.1 would make it False)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clausewatch.cli import main
from config import BUNDLED_DIR
from config.documents import ConfigError
from simulators.scenario import load_scenario

# The demo site with its hvac_mode state `off` unquoted, as an operator may well write it.
SITE = (BUNDLED_DIR / "sites" / "demo-hq.yaml").read_text("utf-8").replace('{"off": 0,', "{off: 0,")


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_repeated_key_in_a_scenario_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: s\nsite: demo-hq\nseed: 1\nseed: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    assert "'seed' appears twice" in problem.message and "line 4" in str(problem)


def test_a_scenario_problem_names_the_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: s\nsite: demo-hq\nweather:\n  mean: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.where, problem.line) == (str(path), "weather.mean", 4)


def test_the_simulator_reads_off_in_a_site_file_as_a_state_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "{off: 0," in SITE
    site = write(tmp_path, "site.yaml", SITE)
    scenario = write(tmp_path, "s.yaml", "name: s\nsite: demo-hq\nsample_interval: 10m\n")
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
    assert "cw/demo-hq/ac-201/telemetry" in capsys.readouterr().out

"""The gateway's files are read by the project's one strict YAML loader (config.documents): a
repeated key is an error naming the file and its line, and in the site file it reads `off` stays
the state name "off" (plain YAML 1.1 would make it False)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import BUNDLED_DIR
from config.documents import ConfigError
from edge.config import load_gateway_config

# The demo site with its hvac_mode state `off` unquoted, as an operator may well write it.
SITE = (BUNDLED_DIR / "sites" / "demo-hq.yaml").read_text("utf-8").replace('{"off": 0,', "{off: 0,")

GATEWAY = """\
site: demo-hq
gateway: gw
site_file: site.yaml
buffer: {path: b.sqlite}
sources:
  - {kind: simulated, device: th-201, metrics: {temperature: {mean: 22}}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_off_in_the_site_file_stays_a_state_name(tmp_path: Path) -> None:
    assert "{off: 0," in SITE
    write(tmp_path, "site.yaml", SITE)
    _, site = load_gateway_config(write(tmp_path, "gw.yaml", GATEWAY))
    assert site is not None
    (device,) = [d for d in site.devices if d.id == "ac-201"]
    assert set(device.metrics["hvac_mode"].states) == {"off", "cooling", "heating", "fan"}


def test_a_repeated_key_in_the_gateway_file_is_an_error_naming_its_line(tmp_path: Path) -> None:
    write(tmp_path, "site.yaml", SITE)
    path = write(tmp_path, "gw.yaml", GATEWAY + "gateway: gw-2\n")
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    assert "'gateway' appears twice" in problem.message
    assert "line 7" in str(problem)


def test_a_repeated_key_in_the_site_file_is_an_error_naming_that_file(tmp_path: Path) -> None:
    twice = SITE.replace("    id: ac-201\n", "    id: ac-201\n    id: ac-209\n")
    line = twice[: twice.index("    id: ac-209")].count("\n") + 1
    site = write(tmp_path, "site.yaml", twice)
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(write(tmp_path, "gw.yaml", GATEWAY))
    (problem,) = caught.value.problems
    assert problem.file == str(site)
    assert "'id' appears twice" in problem.message and f"line {line}," in str(problem)


def test_a_problem_against_the_site_names_the_path_and_line(tmp_path: Path) -> None:
    write(tmp_path, "site.yaml", SITE)
    path = write(tmp_path, "gw.yaml", GATEWAY.replace("device: th-201", "device: nope"))
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: sources[0].device: unknown device 'nope' (line 6)"
    ]


def test_a_device_the_site_model_puts_behind_another_gateway_is_an_error(
    tmp_path: Path,
) -> None:
    behind = "  - id: em-main\n    space: b1\n"
    assert behind in SITE
    write(tmp_path, "site.yaml", SITE.replace(behind, behind + "    gateway: gw-b2\n"))
    meter = (
        "  - {kind: simulated, device: em-main, metrics: {energy_kwh: {mean: 1, rate_per_h: 1}}}\n"
    )
    path = write(tmp_path, "gw.yaml", GATEWAY + meter)
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: sources[1].device: the site model puts 'em-main' behind 'gw-b2' "
        "(devices[].gateway), not this gateway 'gw' (line 7)"
    ]


def test_a_modbus_register_in_another_unit_than_the_site_model_is_an_error(
    tmp_path: Path,
) -> None:
    write(tmp_path, "site.yaml", SITE)
    register = "{metric: energy_kwh, address: 0, type: uint32, unit: Wh}"
    source = f"  - {{kind: modbus_tcp, device: em-main, host: 10.0.0.9, registers: [{register}]}}\n"
    path = write(tmp_path, "gw.yaml", GATEWAY + source)
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: sources[1].registers[0].unit: 'Wh' is not the site model's unit of "
        "em-main.energy_kwh ('kWh') (line 7)"
    ]

"""Operator files: every kind of bad input is reported as `file: path: message (line N)`, and
`clausewatch check` exits 1 on any problem, 0 with a summary otherwise."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import config.check
from clausewatch.cli import main
from config import BUNDLED_DIR
from config.check import check_paths
from config.clausetests import run_clause_test_file
from config.documents import ConfigError, read_yaml
from config.files import load_clause_file, load_config_dir, load_site

SITE = """\
site:
  id: small
  name: Small office
  timezone: Asia/Shanghai
  seasons:
    cooling: {from: "06-01", to: "09-30"}
spaces:
  - {id: b1, type: building, area_m2: 1000}
  - {id: r1, type: office, parent: b1, area_m2: 20}
devices:
  - id: th-1
    space: r1
    metrics:
      temperature: {unit: °C, range: [-20, 60]}
"""

CLAUSES = """\
standard: {code: T-1, title: test standard, edition: "1"}
clauses:
  - id: temp.min
    version: 1
    effective_from: 2024-01-01
    number: "1"
    title: not too cold
    domain: indoor_climate
    confidence: A
    params:
      limit: {default: 26, unit: °C}
    schedule:
      windows:
        - {start: 08:30, end: 13:30}
      season: cooling
    check:
      kind: threshold
      metric: temperature
      min: $limit
      for: 10m
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(call: object, path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        call(path)  # type: ignore[operator]
    return [str(p) for p in caught.value.problems]


def test_valid_files_load(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, "site.yaml", SITE))
    clauses = load_clause_file(write(tmp_path, "clauses.yaml", CLAUSES))
    assert site.site.id == "small"
    window = clauses.clauses[0].schedule.windows[0]
    # Unquoted 08:30 / 13:30 are times, not YAML 1.1 base-60 integers (13:30 would be 810).
    assert (window.start.isoformat(), window.end.isoformat()) == ("08:30:00", "13:30:00")


def test_unknown_key_names_file_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("area_m2: 20}", "area_m2: 20, colour: red}"))
    assert problems_of(load_site, path) == [
        f"{path}: spaces[1].colour: unknown key (allowed here: area_m2, id, last_done, name, "
        "occupants, parent, tags, type) (line 9)"
    ]


def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path) -> None:
    text = CLAUSES.replace("confidence: A", "confidance: A").replace("for: 10m", "fro: 10m")
    path = write(tmp_path, "clauses.yaml", text)
    assert problems_of(load_clause_file, path) == [
        f"{path}: clauses[0].confidence: required, but missing (line 3)",
        f"{path}: clauses[0].check.fro: unknown key: did you mean 'for'? (line 20)",
        f"{path}: clauses[0].confidance: unknown key: did you mean 'confidence'? (line 9)",
    ]


def test_a_mapping_where_a_name_or_a_mapping_may_go_reports_the_mapping_problem(
    tmp_path: Path,
) -> None:
    text = CLAUSES.replace("season: cooling", "season: {from: '06-01', to: '09-30', year: 1}")
    path = write(tmp_path, "clauses.yaml", text)
    assert problems_of(load_clause_file, path) == [
        f"{path}: clauses[0].schedule.season.year: unknown key (allowed here: from, to) (line 15)"
    ]


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("area_m2: 1000", "area_m2: big"))
    (problem,) = problems_of(load_site, path)
    assert problem.startswith(f"{path}: spaces[0].area_m2: Input should be a valid number")
    assert "(got 'big')" in problem and problem.endswith("(line 8)")


def test_negative_area(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("area_m2: 20", "area_m2: -5"))
    assert problems_of(load_site, path) == [
        f"{path}: spaces[1].area_m2: Input should be greater than 0 (got -5) (line 9)"
    ]


def test_missing_required_field(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("  name: Small office\n", ""))
    assert problems_of(load_site, path) == [f"{path}: site.name: required, but missing (line 2)"]


def test_dangling_references(tmp_path: Path) -> None:
    text = SITE.replace("parent: b1,", "parent: b9,").replace("space: r1", "space: r7")
    path = write(tmp_path, "site.yaml", text)
    assert problems_of(load_site, path) == [
        f"{path}: spaces[1].parent: unknown space 'b9' (line 9)",
        f"{path}: devices[0].space: unknown space 'r7' (line 12)",
    ]


def test_a_bad_metric_is_reported_at_its_device_when_other_devices_share_the_good_one(
    tmp_path: Path,
) -> None:
    """Equal metric descriptions are validated once and shared (issue 24); a wrong one is still
    reported at its own device and line, the first time and when an earlier device gave it."""
    device = "  - id: {id}\n    space: r1\n    metrics:\n      temperature: {spec}\n"
    good, bad = "{unit: °C, range: [-20, 60]}", "{unit: °C, range: [60, -20]}"
    text = SITE + "".join(
        device.format(id=i, spec=spec) for i, spec in (("th-2", good), ("th-3", bad), ("th-4", bad))
    )
    path = write(tmp_path, "site.yaml", text)
    assert problems_of(load_site, path) == [
        f"{path}: devices[{i}].metrics.temperature: range must be [low, high] with low < high"
        f" (line {line})"
        for i, line in ((2, 22), (3, 26))
    ]


def test_devices_giving_equal_metrics_share_their_specs(tmp_path: Path) -> None:
    """What a device reports is described once per kind of device in memory (a site of 100,000
    devices held 300,000 specs, 2.3 KiB a device, then a dict and a set of given fields each,
    0.4 KiB: issue 24); the model is the same as before."""
    text = SITE + "".join(
        f"  - id: th-{i}\n    space: r1\n    metrics:\n"
        f"      temperature: {{unit: °C, range: [-20, 60]}}\n      co2: {{unit: ppm}}\n"
        for i in range(2, 5)
    )
    site = load_site(write(tmp_path, "site.yaml", text))
    first, *others = site.devices[1:]
    for device in others:
        assert device.metrics == first.metrics
        assert device.metrics is first.metrics
        assert device.model_fields_set is first.model_fields_set == {"id", "space", "metrics"}
    assert list(first.metrics) == ["temperature", "co2"]
    assert first.metrics["temperature"].range == (-20.0, 60.0)
    # A copy with a change has fields of its own; the shared set is untouched.
    changed = first.model_copy(update={"kind": "meter"})
    assert changed.model_fields_set == {"id", "space", "metrics", "kind"}
    assert others[0].model_fields_set == {"id", "space", "metrics"}


def test_duplicate_id(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("{id: r1,", "{id: b1,").replace("r1", "b1"))
    assert f"{path}: spaces[1].id: duplicate id 'b1' (line 9)" in problems_of(load_site, path)


def test_bad_timezone(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("Asia/Shanghai", "Mars/Olympus"))
    assert problems_of(load_site, path) == [
        f"{path}: site.timezone: unknown IANA timezone 'Mars/Olympus' (line 4)"
    ]


def test_bad_duration(tmp_path: Path) -> None:
    path = write(tmp_path, "clauses.yaml", CLAUSES.replace("for: 10m", "for: 10 minutes"))
    (problem,) = problems_of(load_clause_file, path)
    assert problem.startswith(f"{path}: clauses[0].check.for: '10 minutes' is not a duration")
    assert problem.endswith("(line 20)")


def test_unknown_check_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "clauses.yaml", CLAUSES.replace("kind: threshold", "kind: thresh"))
    (problem,) = problems_of(load_clause_file, path)
    assert problem.startswith(f"{path}: clauses[0].check: Input tag 'thresh' found using 'kind'")


def test_a_bad_condition_reports_its_one_wrong_field(tmp_path: Path) -> None:
    """A condition is a union of shapes; only the closest shape's error is reported."""
    text = CLAUSES.replace(
        "      for: 10m\n",
        "      for: 10m\n      when: {metric: hvac_mode, op: '=>', value: cooling}\n",
    )
    path = write(tmp_path, "clauses.yaml", text)
    (problem,) = problems_of(load_clause_file, path)
    assert problem.startswith(f"{path}: clauses[0].check.when.op: Input should be '<'")


def test_a_nested_condition_reports_the_wrong_leaf(tmp_path: Path) -> None:
    text = CLAUSES.replace(
        "      for: 10m\n",
        "      for: 10m\n      when: {any: [{metric: hvac_mode, op: '==', value: 1, agg: 1}]}\n",
    )
    path = write(tmp_path, "clauses.yaml", text)
    assert problems_of(load_clause_file, path) == [
        f"{path}: clauses[0].check.when.any[0].agg: unknown key (allowed here: aggregate, "
        "metric, op, value) (line 21)"
    ]


def test_undeclared_parameter(tmp_path: Path) -> None:
    path = write(tmp_path, "clauses.yaml", CLAUSES.replace("min: $limit", "min: $lmit"))
    assert problems_of(load_clause_file, path) == [
        f"{path}: clauses[0]: check refers to $lmit, which is not declared in params (line 3)"
    ]


def test_overlapping_versions(tmp_path: Path) -> None:
    second = CLAUSES.split("clauses:\n", 1)[1].replace("version: 1", "version: 2")
    second = second.replace("effective_from: 2024-01-01", "effective_from: 2025-01-01")
    path = write(tmp_path, "clauses.yaml", CLAUSES + second)
    (problem,) = problems_of(load_clause_file, path)
    assert problem.startswith(
        f"{path}: clauses[1].effective_from: version 2 of temp.min starts while version 1"
    )


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("name: Small office", "name: [Small"))
    (problem,) = problems_of(load_site, path)
    assert problem.startswith(f"{path}: line 4, column 11: YAML syntax:")


def test_a_control_character_names_the_file_and_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "site.yaml", SITE.replace("Small office", "Small\x07office"))
    (problem,) = problems_of(load_site, path)
    assert problem.startswith(f"{path}: line 3, column 14: YAML: U+0007 is not allowed")
    assert main(["check", str(path)]) == 1
    assert f"{path}: line 3, column 14: YAML: U+0007" in capsys.readouterr().out


def test_a_document_nested_beyond_the_recursion_limit_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", "[" * 1500 + "]" * 1500)
    assert problems_of(load_site, path) == [f"{path}: YAML: the document nests too deeply"]


def test_a_repeated_key_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, "site.yaml", SITE.replace("type: office,", "type: office, type: toilet,")
    )
    (problem,) = problems_of(load_site, path)
    assert problem.startswith(f"{path}: line 9, column 28: YAML syntax:")
    assert "the key 'type' appears twice" in problem


def test_off_is_a_state_name_not_false(tmp_path: Path) -> None:
    doc = read_yaml(write(tmp_path, "x.yaml", "states: {off: 0, on: 1}\nflag: true\n"))
    assert doc.data == {"states": {"off": 0, "on": 1}, "flag": True}


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", "")
    assert problems_of(load_site, path) == [f"{path}: the file is empty"]


def test_config_dir_cross_checks(tmp_path: Path) -> None:
    write(tmp_path, "sites/small.yaml", SITE)
    clauses = CLAUSES.replace(
        "    check:\n",
        "    overrides:\n      sites: {nowhere: {limit: 25}}\n"
        "    applies_to: {spaces: [r9]}\n    check:\n",
    ).replace("season: cooling", "season: monsoon")
    clause_path = write(tmp_path, "clauses/a.yaml", clauses)
    other_path = write(tmp_path, "clauses/b.yaml", CLAUSES)
    with pytest.raises(ConfigError) as caught:
        load_config_dir(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{clause_path}: clauses[0].overrides.sites.nowhere: unknown site 'nowhere' (line 17)",
        f"{clause_path}: clauses[0].applies_to.spaces[0]: no loaded site has a space 'r9' "
        "(line 18)",
        f"{clause_path}: clauses[0].schedule.season: site 'small' defines no season 'monsoon' "
        "(line 15)",
        f"{other_path}: clauses[0].id: clause 'temp.min' is also defined in {clause_path} (line 3)",
    ]


def test_a_clause_the_engine_cannot_bind_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "sites/small.yaml", SITE)
    text = CLAUSES.replace(
        "      for: 10m\n",
        "      for: 10m\n      when: {metric: temperature, op: '==', value: hot}\n",
    )
    clause_path = write(tmp_path, "clauses/a.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config_dir(tmp_path)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith(f"{clause_path}: clauses[0]: cannot bind to site 'small': ")
    assert "'hot'" in problem


def test_duplicate_site_ids_across_files(tmp_path: Path) -> None:
    write(tmp_path, "sites/a.yaml", SITE)
    second = write(tmp_path, "sites/b.yaml", SITE)
    with pytest.raises(ConfigError) as caught:
        load_config_dir(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{second}: site.id: site 'small' is also defined in {tmp_path / 'sites/a.yaml'} (line 2)"
    ]


def test_bundled_config_loads() -> None:
    config = load_config_dir(BUNDLED_DIR)
    assert "demo-hq" in config.sites
    ids = {c.id for c in config.clause_versions()}
    assert {"temp.cooling.min", "iaq.hcho", "toilet.cleaning"} <= ids
    assert config.standards()["temp.cooling.min"].code == "建科〔2008〕115号"
    hcho = [c for c in config.clause_versions() if c.id == "iaq.hcho"]
    assert [(c.version, c.params["limit"].default) for c in hcho] == [(1, 0.10), (2, 0.08)]


def test_check_classifies_files_and_reports_unknown_ones(tmp_path: Path) -> None:
    write(tmp_path, "small.yaml", SITE)
    write(tmp_path, "rules.yaml", CLAUSES)
    stray = write(tmp_path, "stray.yaml", "hello: world\n")
    result = check_paths([tmp_path])
    assert (result.sites, result.clause_files, result.clause_versions) == (1, 1, 1)
    assert [str(p) for p in result.problems] == [
        f"{stray}: not a site, clause, clause-test or holiday file (expected top-level keys "
        "'site' and 'spaces', 'standard', 'tests', or 'year' and 'holidays')"
    ]


def test_cli_check_bundled_config_is_clean(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A day whose year and the next have official holiday schedules: no calendar warning
    # (tests/config/test_holidays.py has those).
    monkeypatch.setattr(config.check, "today_in_china", lambda: dt.date(2026, 7, 1))
    assert main(["check", str(BUNDLED_DIR)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("ok: 1 site(s), ")


def test_cli_check_exits_1_and_prints_each_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_site = write(tmp_path, "site.yaml", SITE.replace("Asia/Shanghai", "Nowhere/Town"))
    bad_clauses = write(tmp_path, "clauses.yaml", CLAUSES.replace("for: 10m", "for: soon"))
    assert main(["check", str(bad_site), str(bad_clauses), str(tmp_path / "missing.yaml")]) == 1
    out = capsys.readouterr().out
    assert f"{bad_site}: site.timezone: unknown IANA timezone 'Nowhere/Town'" in out
    assert f"{bad_clauses}: clauses[0].check.for: 'soon' is not a duration" in out
    assert f"{tmp_path / 'missing.yaml'}: no such file or directory" in out
    assert out.strip().splitlines()[-1].startswith("3 problem(s)")


def test_cli_check_defaults_to_the_bundled_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    assert "clause test file(s)" in capsys.readouterr().out


def _doc_examples(first_key: str) -> list[str]:
    text = (Path(__file__).parents[2] / "docs" / "config-formats.md").read_text("utf-8")
    blocks = text.split("```yaml\n")[1:]
    return [b.split("```", 1)[0] for b in blocks if b.startswith(first_key)]


def test_the_documented_examples_are_valid(tmp_path: Path) -> None:
    """The complete examples in docs/config-formats.md load, and check clean together."""
    (site,) = _doc_examples("site:")
    (clauses,) = _doc_examples("standard:")
    (tests,) = _doc_examples("clause_file:")
    write(tmp_path, "sites/demo-hq.yaml", site)
    write(tmp_path, "clauses/jianke.yaml", clauses)
    tests = tests.replace("../clauses/jianke-2008-115.yaml", "../clauses/jianke.yaml")
    write(tmp_path, "tests/jianke.yaml", tests)
    result = check_paths([tmp_path])
    assert [str(p) for p in result.problems] == []
    assert (result.sites, result.clause_versions, result.test_files) == (1, 1, 1)
    (outcome,) = run_clause_test_file(tmp_path / "tests" / "jianke.yaml")
    assert outcome.ok, outcome.report()


def test_libyamls_reading_gives_the_data_and_lines_of_the_strict_reader() -> None:
    """read_yaml reads a clean file with libyaml's parser (a 10,000-device site file in a
    fraction of the time) and falls back to the pure-Python loader for any problem: both give
    the same data and the same line for every path of every bundled file."""
    from config import documents

    def paths(node: object, loc: tuple[int | str, ...] = ()) -> Iterator[tuple[int | str, ...]]:
        yield loc
        if isinstance(node, dict):
            for key, value in node.items():
                yield from paths(value, (*loc, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from paths(value, (*loc, index))

    files = sorted(BUNDLED_DIR.rglob("*.yaml"))
    assert len(files) > 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        fast = documents._fast_load(text)
        assert fast is not None, path
        loader = documents._StrictLoader(text)
        root = loader.get_single_node()
        data = loader.construct_document(root)
        loader.dispose()
        slow_doc, fast_doc = documents.YamlDocument(data, root), documents.YamlDocument(*fast)
        assert fast_doc.data == data, path
        assert [fast_doc.line_of(p) for p in paths(data)] == [
            slow_doc.line_of(p) for p in paths(data)
        ], path
    assert documents._fast_load("a: 1\na: 2\n") is None  # the strict reader reports it

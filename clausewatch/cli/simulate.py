"""Command-line entry points of this area (see clausewatch/cli.py): `clausewatch simulate`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from clausewatch.cli import Commands
from clausewatch.cli.common import url_arguments, url_from
from rules.durations import parse_duration

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"


def register(commands: Commands) -> None:
    parser = commands.add(
        "simulate",
        "Publish a simulated building (a bundled scenario or a scenario file) over MQTT.",
    )
    parser.add_argument("scenario", help="bundled scenario name (demo, week-faults) or a YAML path")
    parser.add_argument("--site", type=Path, help="site model file (default: sites/<site>.yaml)")
    url_arguments(
        parser, "mqtt", "default: CLAUSEWATCH_MQTT_URL (or its _FILE) or " + DEFAULT_MQTT_URL
    )
    parser.add_argument("--prefix", help="topic prefix (default: CLAUSEWATCH_TOPIC_PREFIX or cw)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=float, help="simulated seconds per wall second (default: the scenario's)"
    )
    pace.add_argument("--fast", action="store_true", help="as fast as possible for --span")
    parser.add_argument("--span", help="how much simulated time to run, e.g. 7d")
    parser.add_argument(
        "--start",
        help="'now', '-7d' (write --start=-7d), 'last-workday 08:30' or an RFC 3339 time",
    )
    parser.add_argument("--manifest", type=Path, help="write what was injected here (JSON)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print topic and payload lines instead of publishing"
    )
    parser.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from clausewatch.settings import Settings
    from config.documents import ConfigError
    from config.files import load_site
    from simulators.runner import plan, run_scenario, topic_of
    from simulators.scenario import ScenarioError, load_scenario, scenario_path, site_path
    from simulators.stream import Simulation

    try:
        settings = Settings()
        mqtt_url = url_from(args, "mqtt") or settings.mqtt_url or DEFAULT_MQTT_URL
        scenario = load_scenario(scenario_path(args.scenario, settings.config_dir))
        site = load_site(args.site or site_path(scenario.site, settings.config_dir))
        problems = scenario.problems_against(site)
        if problems:
            raise ScenarioError(f"scenario {scenario.name!r}: " + "; ".join(problems))
        span = parse_duration(args.span) if args.span else None
        if args.fast and span is None:
            raise ValueError("--fast needs --span (for example --span 7d)")
    except (ConfigError, ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prefix = args.prefix or settings.topic_prefix
    if args.dry_run:
        now = time.time()
        begin, end = plan(
            scenario,
            site,
            start=args.start or scenario.run.start,
            span=span or 86400.0,
            as_fast_as_possible=True,
            now=now,
        )
        simulation = Simulation(scenario, site, begin, end, now=now)
        out = sys.stdout.buffer
        for message in simulation.messages():
            out.write(
                topic_of(prefix, site.site.id, message).encode() + b" " + message.payload + b"\n"
            )
        _write_manifest(args.manifest, simulation.manifest.to_json())
        return 0
    from simulators.publish import PublishError

    try:
        result = run_scenario(
            scenario,
            site,
            mqtt_url,
            prefix,
            speed=args.speed,
            span=span,
            as_fast_as_possible=args.fast,
            start=args.start,
        )
    except (ValueError, PublishError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    _write_manifest(args.manifest, result.manifest.to_json())
    print(
        f"published {result.published} messages of scenario {scenario.name!r} "
        f"({len(result.manifest.injected)} injected violations/faults)",
        file=sys.stderr,
    )
    return 0


def _write_manifest(path: Path | None, content: bytes) -> None:
    if path is not None:
        path.write_bytes(content)

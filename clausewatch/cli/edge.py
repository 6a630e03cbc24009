"""Command-line entry points of this area (see clausewatch/cli.py): `clausewatch edge run`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from clausewatch.cli import Commands
from clausewatch.cli.common import url_arguments, url_from


def register(commands: Commands) -> None:
    parser = commands.add(
        "edge run",
        "Run an edge gateway: sample its sources, buffer in SQLite, forward to MQTT at QoS 1.",
    )
    parser.add_argument("config", type=Path, help="gateway configuration (YAML)")
    url_arguments(parser, "mqtt", "override broker.url of the configuration")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from config.documents import ConfigError
    from edge.config import load_gateway_config
    from edge.gateway import Gateway, run_until_signalled

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config, _ = load_gateway_config(args.config)
        mqtt_url = url_from(args, "mqtt")
        if mqtt_url:
            broker = config.broker.model_validate(config.broker.model_dump() | {"url": mqtt_url})
            config = config.model_copy(update={"broker": broker})
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_until_signalled(Gateway(config))
    return 0

"""`clausewatch cluster status` and `cluster mapping`: the cluster mode (docs/cluster.md).

`status` prints every partition with its owner, epoch, committed stream sequence and, with a
broker, the lag of its consumer (messages not yet acknowledged), then the node that holds the
periodic jobs' lease. `mapping` prints the subject
mapping every NATS server of the cluster carries, for the configured partition count."""

from __future__ import annotations

import argparse
import sys

import psycopg

from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url
from clausewatch.cluster import broker_servers
from clausewatch.settings import Settings
from ingest.nats import NatsLink, consumer_name, subject_mapping
from store.cluster import JOBS_SESSION, jobs_runner, partition_status
from store.pool import connect


def register(commands: Commands) -> None:
    status = commands.add(
        "cluster status", "Partitions of the cluster mode: owner, epoch, stream position, lag."
    )
    database_argument(status)
    status.add_argument(
        "--broker", help="nats://host:port[,...] to show each consumer's lag (default: the setting)"
    )
    status.set_defaults(func=_status, uses_holiday_calendar=False)

    mapping = commands.add(
        "cluster mapping", "The NATS subject mapping of the partitions, for each server's config."
    )
    mapping.set_defaults(func=_mapping, uses_holiday_calendar=False)


def _status(args: argparse.Namespace) -> int:
    settings = Settings()
    url = database_url(args)
    try:
        with connect(url) as conn:
            rows = partition_status(conn, settings.cluster_lease_s)
            runner = jobs_runner(conn)
    except psycopg.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not rows:
        print("no partitions: no cluster worker has run against this database")
        return 0
    lags: dict[str, int] = {}
    broker = args.broker or settings.broker_url
    if broker:
        link = NatsLink(broker_servers(broker), settings.topic_prefix)
        try:
            link.start(timeout=10)
            lags = link.consumer_lags()
        except Exception as exc:  # the table is still worth printing without lags
            print(f"warning: no lag from {broker.split('@')[-1]}: {exc}", file=sys.stderr)
        finally:
            link.close()
    print(f"{'partition':>9}  {'epoch':>6}  {'committed':>10}  {'lag':>7}  owner")
    for row in rows:
        lag = lags.get(consumer_name(row.partition, row.epoch))
        owner = row.owner or "-"
        if row.owner is not None and not row.owner_alive:
            owner += " (no heartbeat)"
        print(
            f"{row.partition:>9}  {row.epoch:>6}  {row.stream_seq:>10}  "
            f"{'-' if lag is None else lag:>7}  {owner}"
        )
    holder = "no node holds the lease" if runner is None else runner.removeprefix(JOBS_SESSION)
    print(f"periodic jobs: {holder}")
    return 0


def _mapping(_args: argparse.Namespace) -> int:
    settings = Settings()
    source, destination = subject_mapping(settings.topic_prefix, settings.cluster_partitions)
    print(f'mappings {{ "{source}": "{destination}" }}')
    return 0

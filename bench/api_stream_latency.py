"""Latency of the API's live stream: from the commit of an alert timeline row to the SSE event
arriving at a client over HTTP, with N clients connected (p50 / p95 / p99 / max).

    .venv/bin/python bench/api_stream_latency.py [--events 200] [--clients 5]

Needs PostgreSQL (CLAUSEWATCH_TEST_DATABASE_URL or postgres@127.0.0.1:5432); makes and drops a
database of its own.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time

import harness
import httpx
import psycopg
import uvicorn

from api.app import create_app
from api.tokens import create_token
from store.migrate import migrate

SERVER = os.environ.get(
    "CLAUSEWATCH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--clients", type=int, default=5)
    args = parser.parse_args()

    with harness.scratch_database(SERVER, "cw_bench") as url:
        run(url, args.events, args.clients)


def run(url: str, events: int, clients: int) -> None:
    migrate(url)
    with psycopg.connect(url) as conn:
        token, _ = create_token(conn, "viewer")
        conn.execute(
            "INSERT INTO alerts (site, clause_id, clause_version, content_hash, standard, number,"
            " title, domain, kind, severity, space, state, started_at, confirmed_at, updated_at)"
            " VALUES ('s', 'c', 1, 'h', 'std', '1', 't', 'd', 'violation', 'warning', 'r',"
            " 'firing', now(), now(), now())"
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(url), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)

    committed: dict[str, float] = {}  # event id -> time just before its INSERT (autocommit)
    arrivals: list[dict[str, float]] = [{} for _ in range(clients)]
    ready = threading.Barrier(clients + 1)

    def listen(arrived: dict[str, float]) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream(
            "GET", f"http://127.0.0.1:{port}/api/v1/stream", headers=headers, timeout=30
        ) as response:
            for line in response.iter_lines():
                if line.startswith("event: hello"):
                    ready.wait()
                elif line.startswith("id: "):
                    arrived[line[4:]] = time.perf_counter()
                    if len(arrived) > events:  # the hello's id, then every event
                        return

    threads = [threading.Thread(target=listen, args=(a,), daemon=True) for a in arrivals]
    for thread in threads:
        thread.start()
    ready.wait()
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(events):
            before = time.perf_counter()
            row = conn.execute(
                "INSERT INTO alert_timeline (alert_id, site, at, action, actor)"
                " SELECT min(id), 's', now(), 'escalated', 'bench' FROM alerts RETURNING id"
            ).fetchone()
            assert row is not None
            committed[str(row[0])] = before
            time.sleep(0.01)  # about 100 events a second
    for thread in threads:
        thread.join(timeout=30)
    server.should_exit = True
    delays = [
        arrived[event_id] - at
        for arrived in arrivals
        for event_id, at in committed.items()
        if event_id in arrived
    ]
    ms = sorted(d * 1000 for d in delays)
    q = statistics.quantiles(ms, n=100)
    print(
        f"{len(ms)} deliveries ({events} events x {clients} clients): "
        f"p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms, max {ms[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()

"""Speed of the alerts path: record_outputs per pipeline flush, ledger appends and verify.

Run: .venv/bin/python bench/alert_recording.py [--database-url URL] [--outputs 20000] [--batch 1000]

Uses a scratch database on the server (created and dropped), the bundled demo-hq site and
clauses. Outputs are threshold violations on distinct subjects: each batch has its starts and,
for half of them, their ends (the pipeline's worst case is many transitions per flush). Figures:
outputs recorded per second (with their timeline rows and ledger entries), and ledger entries
verified per second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import harness

from alerts.record import record_outputs
from config import BUNDLED_DIR
from config.files import load_config_dir
from rules.verdicts import ClauseRef, Evidence, Subject, ViolationEnded, ViolationStarted
from store import ledger
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_clauses, sync_site

CONFIG = BUNDLED_DIR
START = dt.datetime(2026, 7, 1, 1, 0, tzinfo=dt.UTC).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--outputs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    with harness.scratch_database(args.database_url, "cw_bench_alerts") as url:
        migrate(url)
        run(url, args.outputs, args.batch)


def run(url: str, total: int, batch: int) -> None:
    config = load_config_dir(CONFIG)
    site = config.sites["demo-hq"]
    clause_file = next(iter(config.clause_files.values()))
    clause = clause_file.clauses[0]
    ref = ClauseRef(
        clause_id=clause.id,
        version=clause.version,
        content_hash=clause.content_hash(),
        standard=clause_file.standard.code,
        number=clause.number,
        title=clause.title,
        domain=clause.domain,
        severity=clause.severity,
        key=clause.key,
    )
    space = site.devices[0].space
    now = dt.datetime.now(dt.UTC)
    with connect(url) as conn:
        sync_site(conn, site, "bench", now=now)
        sync_clauses(conn, config.clause_files.values(), "bench", now=now)
        conn.commit()
        recorded = 0
        elapsed = 0.0
        for first in range(0, total, batch):
            outputs: list[ViolationStarted | ViolationEnded] = []
            for i in range(first, min(first + batch, total)):
                subject = Subject(site="demo-hq", space=space, device=f"dev-{i}")
                ts = START + i
                outputs.append(
                    ViolationStarted(
                        clause=ref,
                        subject=subject,
                        kind="violation",
                        started_at=ts,
                        confirmed_at=ts + 900,
                        worst_value=24.0,
                        unit="°C",
                        reason="below limit",
                        params={"limit": 26.0},
                        evidence=(Evidence(ts, "temperature", 24.0, f"dev-{i}"),),
                    )
                )
                if i % 2:
                    outputs.append(ViolationEnded(ref, subject, "violation", ts, ts + 1800, 23.9))
            began = time.perf_counter()
            record_outputs(conn, site, outputs, now=now)
            conn.commit()
            elapsed += time.perf_counter() - began
            recorded += len(outputs)
        print(
            f"record_outputs: {recorded} outputs in batches of ~{batch * 1.5:.0f}: "
            f"{recorded / elapsed:,.0f} outputs/s ({elapsed:.2f} s)"
        )
        began = time.perf_counter()
        verdict = ledger.verify(conn)
        took = time.perf_counter() - began
        print(
            f"ledger verify: {verdict.checked} entries, ok={verdict.ok}: "
            f"{verdict.checked / took:,.0f} entries/s ({took:.2f} s)"
        )


if __name__ == "__main__":
    main()

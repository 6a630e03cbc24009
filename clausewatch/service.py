"""The running service: schema, registry sync, ingest (MQTT → pipeline), scheduler and API.

`Service(settings, config).start()` brings the parts up in dependency order and `stop()` takes
them down in reverse, so nothing is left half-written: the pipeline commits and acknowledges
what it took before the MQTT client disconnects; what it did not take stays with the broker.
`clausewatch run` and `clausewatch demo` both use it, and each node of the cluster mode (with
its worker as the ingest, `ServiceOptions.ingest`); so do the integration tests (without the
HTTP server).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import Gauge
from psycopg_pool import ConnectionPool

from alerts import routing
from alerts.anchors import anchor_tip
from alerts.escalation import escalate_due
from alerts.inhibition import release_due, source_status
from alerts.notify import ActionNotice, deliver_due, queue_actions, queue_reminders
from alerts.record import correct_alerts, record_outputs
from clausewatch.settings import Settings
from compliance.evaluations import due_overdue_steps, record_overdue_steps
from compliance.register import reviews_due
from compliance.reports import generate_due_reports
from compliance.revisions import clause_set, clause_set_stamp
from compliance.site_revisions import apply_due as apply_site_revisions
from config.broker import derive_identities
from config.documents import read_yaml, validate_document
from config.files import LoadedConfig
from energy.summary import period_figures
from ingest.decode import Decoder, DeviceIndex, Limits
from ingest.direct import Busy, DirectIngress
from ingest.mqtt import IngressQueue, MqttSubscriber
from ingest.pipeline import Clock, Pipeline
from ingest.topics import subscription_filter
from rules.clause import ClauseFile, ClauseVersion
from rules.engine import BindingError
from rules.holidays import use_official_calendar
from rules.site import SiteModel
from store.checkpoints import collector_paused, data_times
from store.cluster import JobsLease, worker_id
from store.migrate import migrate
from store.mode import storage_mode
from store.partitions import apply_retention, delete_expired_rows, ensure_partitions
from store.pool import connect, make_pool
from store.registry import site_model, site_stamps, sync_clauses, sync_site
from store.roles import as_role
from store.rollups import refresh_rollups
from store.times import wall_now
from store.timescale_jobs import run_due_timescale_jobs

if TYPE_CHECKING:
    from api.routers.ingest import HttpIngest

log = logging.getLogger(__name__)

# Python's full (generation 2) collections scan every long-lived object: with the engines of 500
# rooms loaded each took 0.1-0.3 s, the largest stalls in alert latency. The engines live as
# long as the service, so once they are built the collector no longer runs full collections by
# itself: everything alive is frozen out of its generations and a job runs a full collection
# (then freezes the survivors) at this interval. Young cycles, such as the one paho makes per
# message, are still collected at once by generations 0 and 1.
FULL_COLLECTION_INTERVAL_S = 600
_NO_AUTOMATIC_FULL_COLLECTIONS = 2**31 - 1
# Generation 0 is collected after this many container allocations (Python's default: 700).
# What a message makes lives until its flush commits, thousands of messages later, so at 700
# every such object was traversed by a young collection and again by a middle one, about a
# tenth of the service's CPU in the e2e profile (issue 24); past a batch, most of it is garbage
# freed by its reference counts before any collection sees it. At 50,000 the young collections
# were still 11 % of the pipeline thread's samples (py-spy, e2e at 1 worker): each one traverses
# what is alive then, the batch waiting for its commit and a checkpoint's captured parts, so
# fewer of them cost less; at 200,000, values per CPU second rose 3-9 % in 3 paired e2e rounds.
YOUNG_COLLECTION_THRESHOLD = 200_000


def settle_after_build() -> None:
    """The memory settings of a service process, applied once its engines are built (the
    benches that drive a pipeline without the service apply them too): the collector's, and
    the free memory building left in the C heap given back to the system."""
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, _NO_AUTOMATIC_FULL_COLLECTIONS)
    _full_collection()
    return_free_memory()


def return_free_memory() -> None:
    """Gives the free memory of the C heap back to the system (glibc's `malloc_trim`): loading
    the configuration and building the engines leave megabytes of it that a running service
    never reuses (0.3 KiB a device at 20,000 devices, bench/scale.py, issue 24). With another
    C library, nothing."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _full_collection() -> None:
    gc.collect()
    gc.freeze()


REVIEWS_DUE = Gauge(
    "clausewatch_clause_reviews_due",
    "Clauses whose review (复审) is due within 90 days or overdue, counted daily",
)

CONFIG_ACTOR = "config"  # how registry changes made from the files are recorded in the ledger
MQTT_CONNECT_WAIT_S = 15.0
# The wall clock makes time final only this long after it passed: a reading stamped just before
# a tick is still in the broker or the ingest queue when the tick lands, and with lateness 0 it
# would be set aside as late, never judged (bench/latency.py saw one in ten at 1,000 msg/s).
# Time-driven rules (overdue, stale) fire this much later.
WALL_CLOCK_GRACE_S = 2.0
# How often each ingest process looks for a clause revision published or rolled back (a
# publication dates from a later day, so a second's delay costs nothing) or a site model synced.
CONFIGURATION_POLL_S = 1.0
# How often the service looks for due TimescaleDB jobs (the shortest schedule is 30 minutes).
TIMESCALE_JOBS_INTERVAL_MIN = 5


ROUTES_FILE = "routes.yaml"  # the notification routes of a config directory


def load_routes(directory: Path) -> routing.RoutesFile:
    """The notification routes of a config directory (`routes.yaml`; none: no routes from the
    file). Raises ConfigError, with the line, for a file that does not check out."""
    path = directory / ROUTES_FILE
    if not path.is_file():
        return routing.RoutesFile()
    return validate_document(path, read_yaml(path), routing.RoutesFile)


def sync_registry(database_url: str, config: LoadedConfig) -> list[ClauseVersion]:
    """Brings the registry tables (sites, spaces, devices, parties, assignments, clause
    versions) and, for a configuration loaded from a directory, the notification routes of its
    routes.yaml in line with the loaded files, in one transaction. Versions that clause
    revisions manage keep their stored content (compliance/revisions.py). Returns the clause
    versions to judge. RuntimeError for a route naming a receiver (webhook target) or site
    that does not exist."""
    with connect(database_url) as conn:
        for site in config.sites.values():
            sync_site(conn, site, CONFIG_ACTOR)
        clauses = clause_set(conn, config.clause_versions())
        sync_clauses(conn, _as_files(config, clauses), CONFIG_ACTOR)
        if config.directory is not None:
            routes = load_routes(config.directory)
            try:
                routing.sync_file(conn, routes, CONFIG_ACTOR, wall_now())
            except routing.RouteInvalid as exc:  # a start that fails in one line, not a trace
                raise RuntimeError(f"{config.directory / ROUTES_FILE}: {exc}") from None
        conn.commit()
    return clauses


def _as_files(config: LoadedConfig, clauses: list[ClauseVersion]) -> list[ClauseFile]:
    """`clauses` grouped under the standard of their clause file."""
    standards = config.standards()
    grouped: dict[str, list[ClauseVersion]] = {}
    for clause in clauses:
        grouped.setdefault(clause.id, []).append(clause)
    return [
        ClauseFile(standard=standards[clause_id], clauses=tuple(versions))
        for clause_id, versions in grouped.items()
    ]


class Ingest(Protocol):
    """Ingest this service does not run itself: the cluster mode's worker (clausewatch/
    cluster.py), which takes partitions of the sites through the database and reads NATS."""

    def start(self, clauses: Sequence[ClauseVersion]) -> None: ...

    def stop(self) -> None: ...

    @property
    def healthy(self) -> bool: ...

    def request_configuration(
        self, clauses: Sequence[ClauseVersion] | None, sites: Mapping[str, SiteModel]
    ) -> None: ...


@dataclass
class ServiceOptions:
    clock: Clock = "wall"
    serve_api: bool = True
    # Scale-out (`clausewatch run --workers N`, ingest/workers.py): the sites this process owns,
    # subscribed per site; None owns every site through one `{prefix}/#` subscription.
    sites: tuple[str, ...] | None = None
    # The periodic database jobs (rollups, partitions, notifications, escalations, retention)
    # run in one process only; the clock tick runs in every ingest process.
    periodic_jobs: bool = True
    # The cluster mode: this ingest instead of the MQTT pipeline (no HTTP ingest then), and
    # the periodic jobs only while this node holds the jobs lease (store.cluster.JobsLease),
    # which it must renew within this many seconds.
    ingest: Ingest | None = None
    jobs_lease_s: float | None = None


T = TypeVar("T")


def escalate(
    conn: psycopg.Connection[Any], clock: Clock, sites: Sequence[str]
) -> list[tuple[int, int]]:
    """One escalation round on the service's clock (`on_alert_clock`)."""
    return on_alert_clock(conn, clock, sites, escalate_due)


def release(conn: psycopg.Connection[Any], clock: Clock, sites: Sequence[str]) -> list[int]:
    """Alerts an outage inhibited whose device is still silent after its gateway came back
    notify on their own (alerts/inhibition.py), on the service's clock (`on_alert_clock`)."""
    return on_alert_clock(conn, clock, sites, release_due)


def escalate_actions(
    conn: psycopg.Connection[Any],
    clock: Clock,
    sites: Sequence[str],
    delays: Sequence[dt.timedelta],
    *,
    now: dt.datetime | None = None,
) -> list[tuple[int, int]]:
    """One round of overdue improvement actions (限期整改) on the alerts' clock
    (`on_alert_clock`), or at `now` for `sites` when given: each step due is queued through the
    alerts' notification channels and counted on the action with a ledger entry, in the
    caller's transaction (so a step is taken once). Returns (action id, level) per step taken.
    Does not commit."""

    def step(
        conn: psycopg.Connection[Any], at: dt.datetime, only: Sequence[str] | None
    ) -> list[tuple[int, int]]:
        due = due_overdue_steps(conn, at, delays, only)
        notices = [
            ActionNotice(s.action_id, s.site, s.level, s.owner, s.domain, s.action) for s in due
        ]
        record_overdue_steps(conn, due, queue_actions(conn, notices, at), at)
        return [(s.action_id, s.level) for s in due]

    if now is not None:
        return step(conn, now, sites)
    return on_alert_clock(conn, clock, sites, step)


def on_alert_clock(
    conn: psycopg.Connection[Any],
    clock: Clock,
    sites: Sequence[str],
    step: Callable[[psycopg.Connection[Any], dt.datetime, Sequence[str] | None], list[T]],
) -> list[T]:
    """Runs a time-driven alert step on the clock the alerts were raised on: the wall clock,
    or with `clock: data` (the demo's simulated building) each site's data time, so an alert
    is not escalated or released by wall-clock minutes that never passed in its building. A
    site whose engine has not advanced yet takes no step."""
    if clock == "wall":
        return step(conn, dt.datetime.now(dt.UTC), None)
    done: list[T] = []
    for site, data_time in sorted(data_times(conn, sites).items()):
        done += step(conn, data_time, (site,))
    return done


class Service:
    """The whole service in one process. Not restartable: make a new one."""

    def __init__(
        self, settings: Settings, config: LoadedConfig, options: ServiceOptions | None = None
    ) -> None:
        self.options = options or ServiceOptions()
        if not settings.database_url or not (settings.mqtt_url or self.options.ingest):
            raise ValueError("the service needs CLAUSEWATCH_DATABASE_URL and CLAUSEWATCH_MQTT_URL")
        self.settings = settings
        self.config = config
        self.roles = settings.database_roles()
        # Migrations run as the owner (the migration login, else the one URL given); everything
        # else acts as the service role, which cannot change the ledger (store/roles.py).
        self.migration_url: str = settings.migration_database_url or settings.database_url
        self.database_url: str = as_role(settings.database_url, self.roles.service)
        self.mqtt_url: str = settings.mqtt_url or ""
        self.pool: ConnectionPool[Any] | None = None
        self._sites: frozenset[str] = frozenset()  # the sites of this process's pipeline
        self.pipeline: Pipeline | None = None
        self.subscriber: MqttSubscriber | None = None
        self.direct: DirectIngress | None = None  # HTTP ingest into the pipeline's queue
        self.scheduler: BackgroundScheduler | None = None
        self._http: Any = None  # uvicorn.Server
        self._http_thread: threading.Thread | None = None
        self._clause_stamp: tuple[int, dt.datetime | None] | None = None
        self._site_stamps: dict[str, dt.datetime] = {}
        self._timescale_job_runs: dict[int, dt.datetime] = {}  # job id: last run by the service
        self.jobs_lease: JobsLease | None = None
        if self.options.jobs_lease_s is not None:
            self.jobs_lease = JobsLease(self.database_url, worker_id(), self.options.jobs_lease_s)
        self._leased_jobs: list[str] = []

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def start(self) -> None:
        if self.config.calendar is not None:
            # Before any engine compiles a schedule: they judge working days with this one.
            use_official_calendar(self.config.calendar)
        migrate(self.migration_url, roles=self.roles)
        with connect(self.database_url) as conn:
            # Read before the set it stands for: a publication in between is seen by the poll.
            self._clause_stamp = clause_set_stamp(conn)
        clauses = sync_registry(self.database_url, self.config)
        with connect(self.database_url) as conn:
            self._site_stamps = site_stamps(conn, list(self.config.sites))
        self.pool = make_pool(self.database_url, min_size=2, max_size=5, name="service")
        with self.pool.connection() as conn:
            ensure_partitions(conn)
        if self.options.ingest is not None:
            # Any site may become this node's: the configuration job looks at them all.
            self._sites = frozenset(self.config.sites)
            self.options.ingest.start(clauses)
        else:
            self._start_pipeline(clauses)
        self.scheduler = self._make_scheduler()
        self.scheduler.start()
        if self.options.serve_api:
            self._start_http()

    def _start_pipeline(self, clauses: Sequence[ClauseVersion]) -> None:
        """The single-node ingest: MQTT (and HTTP) into one pipeline of this process's sites."""
        settings = self.settings
        assert self.pool is not None
        decoder = Decoder(
            DeviceIndex.from_sites(self.config.sites.values()),
            settings.topic_prefix,
            Limits(
                max_payload_bytes=settings.max_payload_bytes,
                max_future_skew_s=settings.max_future_skew_s,
                max_age_s=settings.max_age_s,
            ),
        )
        inbox = IngressQueue(settings.queue_capacity)
        sites = self.config.sites
        # One subscription for the whole prefix: topics of unknown sites become dead letters.
        filters = [f"{settings.topic_prefix}/#"]
        if self.options.sites is not None:
            sites = {site_id: sites[site_id] for site_id in self.options.sites}
            filters = [subscription_filter(settings.topic_prefix, site_id) for site_id in sites]
        self.subscriber = MqttSubscriber(self.mqtt_url, settings.mqtt_client_id, filters, inbox)
        self.direct = DirectIngress(inbox, max_in_flight=settings.http_ingest_max_in_flight)
        self._sites = frozenset(sites)
        self.pipeline = Pipeline(
            self.pool,
            sites,
            clauses,
            decoder,
            inbox,
            self.subscriber.ack,
            sink=record_outputs,
            corrector=correct_alerts,
            on_status=source_status,
            standards={cid: std.code for cid, std in self.config.standards().items()},
            lateness=settings.lateness_s,
            max_age=settings.max_age_s,
            batch_rows=settings.batch_rows,
            flush_interval=settings.flush_interval_s,
            clock=self.options.clock,
        )
        # The engines restored here live as long as the service: frozen as they are made, no
        # collection scans them (after restoring 100,000 devices the first young one took
        # 1.5 s). Nothing else takes input yet, so no other thread's garbage is frozen with them.
        with collector_paused(keep=True):
            self.pipeline.start()
        settle_after_build()
        self.subscriber.start()
        if not self.subscriber.wait_connected(MQTT_CONNECT_WAIT_S):
            log.warning(
                "MQTT broker at %s not reachable yet; retrying in the background",
                self.subscriber.url.redacted(),
            )

    def stop(self) -> None:
        """Stops everything that was started, newest first. Safe to call more than once."""
        if self._http is not None:
            self._http.should_exit = True
            if self._http_thread is not None:
                self._http_thread.join(15)
            self._http = None
        if self.scheduler is not None:
            if self.scheduler.running:  # not yet when a start was abandoned just before
                self.scheduler.shutdown(wait=True)
            self.scheduler = None
        if self.jobs_lease is not None:
            self.jobs_lease.close()
        if self.options.ingest is not None:
            self.options.ingest.stop()
        if self.pipeline is not None:
            self.pipeline.stop()  # commits and acks what it took, while still connected
        if self.subscriber is not None:
            self.subscriber.stop()
            self.subscriber = None
        self.pipeline = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    @property
    def healthy(self) -> bool:
        if self.options.ingest is not None:
            return self.options.ingest.healthy
        return self.pipeline is not None and self.pipeline.alive

    # -- scheduler --

    def _make_scheduler(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone=dt.UTC,
        )
        if self.options.clock == "wall" and self.options.ingest is None:
            scheduler.add_job(self._tick, "interval", seconds=1, id="advance")
        scheduler.add_job(
            _full_collection, "interval", seconds=FULL_COLLECTION_INTERVAL_S, id="collect"
        )
        # Every ingest process: its engines judge with the clause versions revisions publish
        # and the site models synced while it runs.
        scheduler.add_job(
            self._configuration, "interval", seconds=CONFIGURATION_POLL_S, id="configuration"
        )
        if not self.options.periodic_jobs:
            return scheduler
        add = scheduler.add_job
        if self.jobs_lease is not None:
            assert self.options.jobs_lease_s is not None
            add = self._leased_adder(scheduler)
            scheduler.add_job(
                self._renew_jobs_lease,
                "interval",
                seconds=self.options.jobs_lease_s / 3,
                id="jobs_lease",
                next_run_time=dt.datetime.now(dt.UTC),
            )
        add(self._partitions, "interval", hours=1, id="partitions")
        add(self._rollups, "interval", seconds=60, id="rollups")
        add(self._notifications, "interval", seconds=10, id="notifications")
        add(self._escalations, "interval", seconds=30, id="escalations")
        # Site revisions published for a time that has come: written and synced, which every
        # ingest process's `configuration` job then hands its engines. Only with a
        # configuration directory of the deployment's own (the bundled one is not written).
        config_dir = self.settings.config_dir
        if config_dir is not None:
            add(self._site_revisions, "interval", seconds=CONFIGURATION_POLL_S, id="site_revisions")
        # Overdue improvement actions (限期整改) count in days: a minute is soon enough.
        add(self._action_escalations, "interval", seconds=60, id="action_escalations")
        # Also once at start: an interval job first runs one interval after it, so a service
        # restarted more often than daily would otherwise never apply retention.
        add(
            self._retention,
            "interval",
            hours=24,
            id="retention",
            next_run_time=dt.datetime.now(dt.UTC),
        )
        # TimescaleDB's policy jobs, which its own scheduler fails to complete on some builds
        # (store/timescale_jobs.py): a job is run when its schedule interval has passed since
        # it last completed, so a few minutes' granularity is enough; also at start.
        add(
            self._timescale_jobs,
            "interval",
            minutes=TIMESCALE_JOBS_INTERVAL_MIN,
            id="timescale_jobs",
            next_run_time=dt.datetime.now(dt.UTC),
        )
        # Quarter-end self-evaluation reports: the job makes only missing ones, so an hourly
        # run produces each within the hour after a quarter ends and catches up after downtime.
        add(self._evaluation_reports, "interval", hours=1, id="evaluation_reports")
        # 复审 reminders: the register flags them on every read; this puts the count where
        # monitoring sees it (and in the log), once a day and at start.
        add(
            self._reviews_due,
            "interval",
            hours=24,
            id="reviews_due",
            next_run_time=dt.datetime.now(dt.UTC),
        )
        if (
            self.settings.ledger_key_file is not None
            and self.settings.ledger_anchor_dir is not None
        ):
            # Also at start: the first anchor should not wait an hour.
            add(
                self._ledger_anchor,
                "interval",
                seconds=self.settings.ledger_anchor_interval_s,
                id="ledger_anchor",
                next_run_time=dt.datetime.now(dt.UTC),
            )
        elif (
            self.settings.ledger_key_file is not None or self.settings.ledger_anchor_dir is not None
        ):
            log.warning(
                "the ledger is not anchored: set both CLAUSEWATCH_LEDGER_KEY_FILE and "
                "CLAUSEWATCH_LEDGER_ANCHOR_DIR"
            )
        return scheduler

    def _leased_adder(self, scheduler: BackgroundScheduler) -> Callable[..., Any]:
        """`scheduler.add_job` for a job that runs only while this node holds the jobs lease."""
        lease = self.jobs_lease
        assert lease is not None

        def add(func: Callable[[], None], *args: Any, id: str, **kwargs: Any) -> Any:
            def leased() -> None:
                if lease.holds():
                    func()

            # "Also at start" is at taking the lease (`_renew_jobs_lease`) here.
            kwargs.pop("next_run_time", None)
            self._leased_jobs.append(id)
            return scheduler.add_job(leased, *args, id=id, **kwargs)

        return add

    def _renew_jobs_lease(self) -> None:
        """Keeps the jobs lease, or takes it when free (the runner died or stalled); taken, it
        runs every periodic job once at once, as a start does: the last runner may have died
        before their turn."""
        lease, scheduler = self.jobs_lease, self.scheduler
        assert lease is not None
        had = lease.held
        if not lease.refresh() or had or scheduler is None:
            if had and not lease.held:
                log.warning("this node no longer runs the periodic jobs (lease lost)")
            return
        log.info("this node runs the periodic jobs (lease %s)", lease.owner)
        now = dt.datetime.now(dt.UTC)
        for job_id in self._leased_jobs:
            scheduler.modify_job(job_id, next_run_time=now)

    def _tick(self) -> None:
        if self.pipeline is not None:
            self.pipeline.request_advance(time.time() - WALL_CLOCK_GRACE_S)

    def _job(self, name: str, work: Any) -> None:
        """Runs one periodic job in its own transaction; a failure is logged and the job runs
        again at its next turn (the scheduler must outlive a database restart)."""
        if self.pool is None:
            return
        try:
            with self.pool.connection() as conn:
                work(conn)
        except Exception:
            log.exception("scheduled job %s failed; it runs again at its next turn", name)

    def _configuration(self) -> None:
        """Hands the pipeline what changed in the registry since the last look: the clause set
        when a revision was published or rolled back, the model of each of its sites that was
        synced anew (a site workbook imported). Two small queries per turn."""

        def work(conn: psycopg.Connection[Any]) -> None:
            pipeline = self.options.ingest or self.pipeline
            if pipeline is None:
                return
            clauses = None
            stamp = clause_set_stamp(conn)
            if stamp != self._clause_stamp:
                clauses = clause_set(conn, self.config.clause_versions())
                self._clause_stamp = stamp
            stamps = site_stamps(conn, sorted(self._sites))
            changed: dict[str, SiteModel] = {}
            for site_id, at in stamps.items():
                model = None if self._site_stamps.get(site_id) == at else site_model(conn, site_id)
                if model is not None:
                    changed[site_id] = model
            self._site_stamps.update(stamps)
            if clauses is None and not changed:
                return
            what = (["the clause set"] if clauses is not None else []) + sorted(changed)
            try:  # taken as seen: a configuration that cannot be judged is logged once
                pipeline.request_configuration(clauses, changed)
            except BindingError as exc:
                log.error("configuration not applied (%s): %s", ", ".join(what), exc)
                return
            log.info("configuration changed: %s handed to the pipeline", ", ".join(what))

        self._job("configuration", work)

    def _partitions(self) -> None:
        self._job("partitions", ensure_partitions)

    def _rollups(self) -> None:
        self._job("rollups", refresh_rollups)

    def _retention(self) -> None:
        settings = self.settings

        def work(conn: psycopg.Connection[Any]) -> None:
            apply_retention(conn, settings.retention_days)
            conn.commit()
            delete_expired_rows(
                conn,
                dead_letter_days=settings.dead_letter_retention_days,
                device_status_days=settings.device_status_retention_days,
            )

        self._job("retention", work)

    def _timescale_jobs(self) -> None:
        """As the owner role, which owns the jobs (the service role may not run them, and
        `run_job` in a SECURITY DEFINER function fails: a job commits), through the migration
        login, which may act for it. Autocommit: each job runs in its own transactions."""
        if self.pool is None:
            return
        try:
            with self.pool.connection() as conn:
                if storage_mode(conn) != "timescaledb":
                    return
            url = as_role(self.migration_url, self.roles.owner)
            try:
                owner = connect(url, autocommit=True)
            except psycopg.OperationalError as exc:
                log.error(
                    "TimescaleDB jobs not run: the migration login cannot act as %s (%s);"
                    " see docs/storage.md, Modes",
                    self.roles.owner,
                    exc,
                )
                return
            with owner:
                run_due_timescale_jobs(owner, self._timescale_job_runs)
        except Exception:
            log.exception("scheduled job timescale_jobs failed; it runs again at its next turn")

    def _notifications(self) -> None:
        base_url = self.settings.alert_link_base()

        def work(conn: psycopg.Connection[Any]) -> None:
            now = dt.datetime.now(dt.UTC)
            queue_reminders(conn, now)
            conn.commit()
            deliver_due(conn, now, public_base_url=base_url)

        self._job("notifications", work)

    def _escalations(self) -> None:
        sites = sorted(self.config.sites)

        def work(conn: psycopg.Connection[Any]) -> None:
            escalate(conn, self.options.clock, sites)
            release(conn, self.options.clock, sites)

        self._job("escalations", work)

    def _site_revisions(self) -> None:
        config_dir = self.settings.config_dir
        assert config_dir is not None
        sites = sorted(self.config.sites)

        def work(conn: psycopg.Connection[Any]) -> None:
            applied = on_alert_clock(
                conn,
                self.options.clock,
                sites,
                lambda c, now, only: apply_site_revisions(c, config_dir, now, only),
            )
            if applied:
                log.info("site revisions applied: %s", ", ".join(map(str, applied)))

        self._job("site_revisions", work)

    def _action_escalations(self) -> None:
        sites = sorted(self.config.sites)
        delays = self.settings.action_escalation_delays()
        self._job(
            "action_escalations",
            lambda conn: escalate_actions(conn, self.options.clock, sites, delays),
        )

    def _evaluation_reports(self) -> None:
        self._job(
            "evaluation_reports",
            lambda conn: generate_due_reports(
                conn, "scheduler", dt.datetime.now(dt.UTC), energy=period_figures
            ),
        )

    def _reviews_due(self) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            due = reviews_due(conn, dt.datetime.now(dt.UTC).date())
            REVIEWS_DUE.set(len(due))
            if due:
                log.info(
                    "%d clauses due for review (复审): %s",
                    len(due),
                    ", ".join(f"{e.clause_id} ({e.review_due})" for e in due[:20]),
                )

        self._job("reviews_due", work)

    def _ledger_anchor(self) -> None:
        key_file, folder = self.settings.ledger_key_file, self.settings.ledger_anchor_dir
        assert key_file is not None and folder is not None

        def anchor(conn: Any) -> None:
            written = anchor_tip(conn, key_file, folder, dt.datetime.now(dt.UTC))
            if written is not None:
                log.info("ledger anchored: %s", written.describe())

        self._job("ledger_anchor", anchor)

    # -- HTTP --

    def _http_ingest(self) -> HttpIngest:
        """HTTP ingest (api/routers/ingest.py) into this process's pipeline: the devices' broker
        logins (no gateways: they publish over MQTT) checked against the broker's password
        file. With `--workers N` only the sites of this worker (0) are taken here; posts for the
        others are refused with 503 naming why (no hop between processes)."""
        from api.routers.ingest import DevicePasswords, HttpIngest, IngestBusy

        direct = self.direct
        assert direct is not None
        settings = self.settings

        def submit(topic: str, payload: bytes) -> Any:
            try:
                return direct.submit(topic, payload)
            except Busy as busy:
                raise IngestBusy(busy.detail, busy.retry_after) from None

        identities = derive_identities(self.config.sites, (), settings.topic_prefix)
        password_file = settings.device_password_file
        return HttpIngest(
            submit=submit,
            prefix=settings.topic_prefix,
            identities={identity.username: identity for identity in identities},
            passwords=None if password_file is None else DevicePasswords(password_file),
            sites=self._sites,
            other_sites=frozenset(self.config.sites) - self._sites,
            max_bytes=settings.max_payload_bytes,
            max_items=Limits().max_items,
            commit_timeout_s=settings.http_ingest_commit_timeout_s,
            data_clock=self.options.clock == "data",
            last_done=self._request_last_done,
        )

    def _request_last_done(self, site: str, space: str, task: str, at: float) -> Any:
        """A last-done time set through the API, to this process's pipeline (whichever is
        running: it is made again after a database outage)."""
        pipeline = self.pipeline
        if pipeline is None:
            raise RuntimeError("the ingest pipeline is not running")
        return pipeline.request_last_done(site, space, task, at)

    def _start_http(self) -> None:
        import uvicorn

        from api.app import create_app
        from api.serving import ServerLimits, server_config
        from api.sessions import SessionPolicy
        from api.stream import StreamConfig

        assert self.pool is not None
        settings = self.settings
        app = create_app(
            self.database_url,
            stream=StreamConfig(max_streams_per_token=settings.stream_max_per_token),
            max_body_bytes=settings.http_max_body_bytes,
            ledger_anchors=settings.ledger_anchor_source(),
            http_ingest=None if self.direct is None else self._http_ingest(),
            config_dir=settings.config_dir,
            session_policy=SessionPolicy(
                lifetime=dt.timedelta(seconds=settings.session_lifetime_s),
                idle_timeout=dt.timedelta(seconds=settings.session_idle_timeout_s),
            ),
            public_base_url=settings.public_base_url or None,
        )
        limits = ServerLimits(
            header_timeout_s=settings.http_header_timeout_s,
            keep_alive_s=settings.http_keep_alive_s,
            max_connections=settings.http_max_connections,
        )
        config = server_config(app, settings.http_host, settings.http_port, limits)
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._http.run, name="http", daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + 30
        while not self._http.started:
            if not self._http_thread.is_alive():
                raise RuntimeError(f"the API could not start on {self.api_url}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {self.api_url} within 30 s")
            time.sleep(0.05)

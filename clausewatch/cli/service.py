"""`clausewatch run` (the service against configured PostgreSQL and broker) and `clausewatch demo`
(everything on one machine: embedded parts when none are configured, the bundled site and
clauses, a simulated building, the dashboard)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clausewatch.cli import Commands
from clausewatch.cli.common import url_arguments, url_from
from config import BUNDLED_DIR
from config.urls import database_named, redact_url

log = logging.getLogger("clausewatch")

DEMO_SCENARIO = "demo"
DEMO_DATABASE = "clausewatch"
# The simulated building publishes in simulated time, which may lie months back (the cooling
# season); the demo accepts such readings instead of dead-lettering them as too old.
DEMO_MAX_AGE_S = 3 * 366 * 86400.0
# The demo's admin token is revoked when the demo stops; this bounds it should the demo be killed.
DEMO_TOKEN_LIFETIME = dt.timedelta(days=7)
# The demo's person: signs in at /login with the password the banner prints (a new one each run).
DEMO_USER = "demo"
DEMO_USER_NAME = "演示用户"


def register(commands: Commands) -> None:
    run = commands.add(
        "run", "Run the service (ingest, scheduler, API) against configured PostgreSQL and MQTT."
    )
    _service_options(run)
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="ingest processes; each owns whole sites (topic filters per site), default 1",
    )
    run.add_argument(
        "--clock",
        choices=("wall", "data"),
        default="wall",
        help="wall: time-driven rules move with the wall clock (live devices, the default); "
        "data: each site follows the newest event time it receives (replays, simulations)",
    )
    run.add_argument(
        "--broker",
        help="nats://host:port[,...]: run one worker of the cluster mode (docs/cluster.md) on "
        "NATS JetStream instead of MQTT (default: CLAUSEWATCH_BROKER_URL)",
    )
    # Internal: set by the --workers supervisor on each worker process it starts.
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)

    demo = commands.add(
        "demo",
        "Run everything locally: embedded PostgreSQL and MQTT broker unless configured, the demo "
        "site and clauses, a simulated building, and the dashboard on http://127.0.0.1:8000.",
    )
    _service_options(demo)
    demo.add_argument("--data-dir", type=Path, help="where the embedded parts keep their data")
    demo.add_argument(
        "--speed", type=float, help="simulated seconds per wall second (default: the scenario's)"
    )
    demo.add_argument(
        "--no-simulator", action="store_true", help="do not start the simulated building"
    )
    demo.set_defaults(func=_demo)


def _service_options(parser: argparse.ArgumentParser) -> None:
    url_arguments(parser, "database", "default: CLAUSEWATCH_DATABASE_URL (or its _FILE)")
    url_arguments(parser, "mqtt", "default: CLAUSEWATCH_MQTT_URL (or its _FILE)")
    parser.add_argument(
        "--config-dir", type=Path, help="sites/ and clauses/ (default: CLAUSEWATCH_CONFIG_DIR)"
    )
    parser.add_argument("--host", help="API address (default: CLAUSEWATCH_HTTP_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="API port (default: CLAUSEWATCH_HTTP_PORT, 8000)")


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from clausewatch.settings import Settings

    overrides: dict[str, Any] = {
        "database_url": url_from(args, "database"),
        "mqtt_url": url_from(args, "mqtt"),
        "config_dir": args.config_dir,
        "http_host": args.host,
        "http_port": args.port,
        **extra,
    }
    base = Settings()
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _load_config(config_dir: Path | None) -> Any:
    from clausewatch.service import load_routes
    from config.documents import ConfigError
    from config.files import load_config_dir

    directory = config_dir or BUNDLED_DIR
    try:
        loaded = load_config_dir(directory)
        load_routes(directory)  # checked now; synced when the service starts
        return loaded
    except ConfigError as exc:
        print(f"error: configuration in {directory} is invalid:\n{exc}", file=sys.stderr)
        return None


def _startup_errors() -> tuple[type[Exception], ...]:
    """What a start can fail with that is the machine's or the configuration's fault, not a bug:
    a port in use, a database or broker that does not answer, an embedded part that does not
    come up. Reported as one line, not a traceback."""
    import psycopg

    return (OSError, RuntimeError, psycopg.Error)


def _logging(level: str) -> None:
    """The service's logging at `level` (CLAUSEWATCH_LOG_LEVEL); noisy libraries at WARNING."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # psycopg's pool logs every connection taken and returned at INFO (several lines a flush).
    for noisy in ("apscheduler", "amqtt", "transitions", "httpx", "httpcore", "psycopg", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _StopRequested(Exception):
    """A second SIGINT or SIGTERM while the service was starting: the start is abandoned, and
    what had started is stopped."""


class _Signals:
    """SIGINT and SIGTERM, handled from before the service starts. Once it runs, one ends
    `wait`. While it starts, the first one makes `wait` return as soon as the start is done (a
    start interrupted anywhere could leave half-made parts to stop) and a second abandons the
    start (`_StopRequested`: a start that hangs, on an unreachable database say). Installed only
    once the service said it ran, a SIGTERM in between killed the process without stopping the
    service (exit -15)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = False
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: object) -> None:
        if self._running or not self._stop.is_set():
            if not self._running:
                log.info("stopping once started (signal again to abandon the start)")
            self._stop.set()
            return
        raise _StopRequested

    def wait(self, service: Any, extra_check: Any = None) -> None:
        """Blocks until SIGINT or SIGTERM (or the pipeline dies of a bug)."""
        self._running = True
        if self._stop.is_set():  # came while the service started
            return
        while not self._stop.wait(1.0):
            if not service.healthy:
                log.error("the ingest pipeline stopped; shutting down")
                return
            if extra_check is not None:
                extra_check()


def _run(args: argparse.Namespace) -> int:
    from clausewatch.service import Service, ServiceOptions

    try:
        settings = _settings(args, broker_url=args.broker)
    except ValidationError:
        raise  # settings from the environment: `clausewatch.cli.main` says what is wrong
    except ValueError as exc:  # a --*-url-file that cannot be read
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.broker_url:
        return _run_cluster_worker(args, settings)
    missing = [
        name
        for name, value in (
            ("CLAUSEWATCH_DATABASE_URL", settings.database_url),
            ("CLAUSEWATCH_MQTT_URL", settings.mqtt_url),
        )
        if not value
    ]
    if missing:
        print(
            f"error: clausewatch run needs {' and '.join(missing)} (or --database-url / "
            "--mqtt-url); `clausewatch demo` starts embedded ones instead",
            file=sys.stderr,
        )
        return 2
    config = _load_config(settings.config_dir)
    if config is None:
        return 2
    _logging(settings.log_level)
    if args.workers != 1 or args.worker_index is not None:
        return _run_workers(args, settings, config)
    signals = _Signals()
    service = Service(settings, config, ServiceOptions(clock=args.clock))
    try:
        service.start()
        log.info(
            "clausewatch running: %d site(s), %d clause version(s), API on %s",
            len(config.sites),
            len(config.clause_versions()),
            service.api_url,
        )
        signals.wait(service)
    except _StopRequested:
        log.info("start abandoned")
    except _startup_errors() as exc:
        print(f"error: clausewatch could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        service.stop()
    log.info("clausewatch stopped")
    return 0


def _run_cluster_worker(args: argparse.Namespace, settings: Any) -> int:
    """`--broker nats://...`: one node of the cluster mode in this process (run one per
    machine or more): the service of a single node (API, periodic jobs while this node holds
    their lease) with a cluster worker as its ingest, which takes its share of the partitions
    and gives them up when it stops."""
    from clausewatch.cluster import ClusterWorker
    from clausewatch.service import Service, ServiceOptions

    if not settings.broker_url.startswith("nats://"):
        print("error: --broker must be a nats:// URL", file=sys.stderr)
        return 2
    if not settings.database_url:
        print("error: the cluster mode needs CLAUSEWATCH_DATABASE_URL", file=sys.stderr)
        return 2
    if args.workers != 1:
        # Every process is a whole cluster node already (its API, its share of partitions):
        # more of them on one machine are more `run --broker` processes, each on its own port.
        print(
            "error: --workers is the single-node mode's; with --broker each process is one "
            "worker of the cluster: start `clausewatch run --broker ...` once per worker "
            "(with its own CLAUSEWATCH_HTTP_PORT on a shared machine)",
            file=sys.stderr,
        )
        return 2
    config = _load_config(settings.config_dir)
    if config is None:
        return 2
    _logging(settings.log_level)
    logging.getLogger("nats").setLevel(logging.WARNING)
    worker = ClusterWorker(settings, config, clock=args.clock)
    options = ServiceOptions(clock=args.clock, ingest=worker, jobs_lease_s=settings.cluster_lease_s)
    signals = _Signals()
    service = Service(settings, config, options)
    try:
        service.start()
        log.info(
            "clausewatch cluster worker %s running: %d partitions over the sites of %d, API on %s",
            worker.owner,
            settings.cluster_partitions,
            len(config.sites),
            service.api_url,
        )
        signals.wait(service)
    except _StopRequested:
        log.info("start abandoned")
    except _startup_errors() as exc:
        print(f"error: clausewatch could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        service.stop()
    if worker.failure is not None:
        return 3
    log.info("clausewatch cluster worker stopped")
    return 0


def _run_workers(args: argparse.Namespace, settings: Any, config: Any) -> int:
    """`--workers N`: this process supervises N worker processes (ingest/workers.py); with
    `--worker-index` it is one of them and runs the service for its sites."""
    from clausewatch.service import Service, ServiceOptions
    from ingest.workers import die_with_parent, partition_sites, supervise

    try:
        partition = partition_sites(config.sites, args.workers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    index = args.worker_index
    if index is None:
        command = [sys.executable, "-m", "clausewatch", *_without_urls(sys.argv[1:])]
        for i, sites in enumerate(partition):
            log.info("worker %d owns %s", i, ", ".join(sites))
        return supervise(
            [[*command, "--worker-index", str(i)] for i in range(args.workers)],
            env=_child_environment(settings),
        )
    if not 0 <= index < args.workers:
        print(f"error: --worker-index must be below --workers {args.workers}", file=sys.stderr)
        return 2
    die_with_parent()
    worker_settings = settings.model_copy(
        update={"mqtt_client_id": f"{settings.mqtt_client_id}-w{index}"}
    )
    options = ServiceOptions(
        clock=args.clock,
        sites=partition[index],
        serve_api=index == 0,
        periodic_jobs=index == 0,
    )
    signals = _Signals()
    service = Service(worker_settings, config, options)
    try:
        service.start()
        log.info("worker %d running: sites %s", index, ", ".join(partition[index]))
        signals.wait(service)
    except _StopRequested:
        log.info("worker %d: start abandoned", index)
    finally:
        service.stop()
    return 0


# Flags whose value is (or names) a URL: a child process gets the URLs through its environment.
_URL_FLAGS = ("--database-url", "--mqtt-url", "--database-url-file", "--mqtt-url-file")


def _without_urls(argv: list[str]) -> list[str]:
    """`argv` without the URL flags and their values (`--mqtt-url X` and `--mqtt-url=X`)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _URL_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in _URL_FLAGS)):
            kept.append(arg)
    return kept


def _child_environment(settings: Any) -> dict[str, str]:
    """This process's environment with the database and broker URLs in force, for a child
    process: the environment of a process is readable by its user only (/proc/PID/environ),
    its command line by everyone (/proc/PID/cmdline, ps)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CLAUSEWATCH_DATABASE_URL_FILE", "CLAUSEWATCH_MQTT_URL_FILE")
    }
    for name, value in (
        ("CLAUSEWATCH_DATABASE_URL", settings.database_url),
        ("CLAUSEWATCH_MQTT_URL", settings.mqtt_url),
    ):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env


def default_data_dir() -> Path:
    """Root keeps service data in /var/lib (its home is private, which the unprivileged database
    user could not enter); other users in their user data folder."""
    if os.geteuid() == 0:
        return Path("/var/lib/clausewatch/demo")
    import platformdirs

    return Path(platformdirs.user_data_dir("clausewatch", appauthor=False))


def _demo(args: argparse.Namespace) -> int:
    from clausewatch.embedded import EmbeddedBroker, EmbeddedPostgres
    from clausewatch.service import Service, ServiceOptions
    from config.broker import derive_identities, simulator_identity

    try:
        settings = _settings(args, max_age_s=DEMO_MAX_AGE_S)
    except ValidationError:
        raise  # settings from the environment: `clausewatch.cli.main` says what is wrong
    except ValueError as exc:  # a --*-url-file that cannot be read
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _logging(settings.log_level)
    config = _load_config(settings.config_dir)
    if config is None:
        return 2
    data_dir = args.data_dir or settings.data_dir or default_data_dir()
    started: list[str] = []
    stoppers: list[Any] = []
    simulator: subprocess.Popen[bytes] | None = None
    service: Service | None = None
    demo_token_id: int | None = None
    demo_login = False
    code = 0
    embedded_database = not settings.database_url
    signals = _Signals()
    try:
        if embedded_database:
            database = EmbeddedPostgres(data_dir / "postgres")
            database.start()
            stoppers.append(database.stop)
            url = _ensure_database(database.url, DEMO_DATABASE)
            settings = settings.model_copy(update={"database_url": url})
            started.append(f"PostgreSQL (embedded)   {url}  data: {database.cluster_dir}")
        else:
            started.append(f"PostgreSQL (configured) {redact_url(settings.database_url)}")
        if not settings.mqtt_url:
            # Open only to the service (reads) and the simulator (publishes for the sites'
            # devices), each with a password made for this run.
            service_login = derive_identities(config.sites, [], settings.topic_prefix)[0]
            simulator_login = simulator_identity(config.sites, settings.topic_prefix)
            broker = EmbeddedBroker(data_dir / "broker", logins=[service_login, simulator_login])
            broker.start()
            stoppers.append(broker.stop)
            settings = settings.model_copy(update={"mqtt_url": broker.url})
            simulator_url = broker.url_for(simulator_login.username)
            started.append(
                f"MQTT broker (embedded)  {redact_url(broker.url)}  (amqtt, MQTT 3.1.1; logins "
                f"for the service and the simulator only)"
            )
        else:
            simulator_url = settings.mqtt_url
            started.append(f"MQTT broker (configured) {redact_url(settings.mqtt_url)}")

        unanchored = settings.ledger_key_file is None and settings.ledger_anchor_dir is None
        if embedded_database and unanchored:  # a configured database may hold other ledgers
            settings = settings.model_copy(update=_demo_anchoring(data_dir))
            started.append(
                f"ledger anchors          {settings.ledger_anchor_dir}  (signed hourly with "
                f"{settings.ledger_key_file}; check: clausewatch ledger verify --anchors "
                f"{settings.ledger_anchor_dir} --public-key {settings.ledger_key_file}.pub)"
            )
        # Simulated time: each site's engine follows the newest event time it has seen.
        service = Service(settings, config, ServiceOptions(clock="data"))
        service.start()
        started.append(
            f"ingest pipeline         {len(config.sites)} site(s), "
            f"{len(config.clause_versions())} clause version(s), topics {settings.topic_prefix}/#"
        )
        started.append(
            "scheduler               rollups, partitions, escalations, notifications, retention"
        )
        token, demo_token_id = _demo_token(settings.database_url)
        started.append(
            f"API and dashboard       {service.api_url}/  (OpenAPI: {service.api_url}/docs)"
        )
        started.append(f"admin token (demo)      {token}")
        password = _demo_login(settings.database_url)
        demo_login = True
        started.append(
            f"sign-in (demo)          {service.api_url}/login  user {DEMO_USER}"
            f"  password {password}  (admin; disabled when the demo stops)"
        )
        if not args.no_simulator:
            simulator = _start_simulator(settings, simulator_url, args.speed)
            started.append(
                f"simulator               scenario '{DEMO_SCENARIO}' (pid {simulator.pid})"
            )
            clock = _simulated_time(settings, config, args.speed)
            if clock is not None:
                started.append(clock)
        print("\nclausewatch demo is running:\n  " + "\n  ".join(started), flush=True)
        print(
            f"\nAlerts: curl -H 'Authorization: Bearer {token}' {service.api_url}/api/v1/alerts"
            "\nCtrl-C stops everything.\n",
            flush=True,
        )

        def simulator_check() -> None:
            nonlocal simulator
            if simulator is not None and simulator.poll() is not None:
                log.info(
                    "the simulator finished (exit %s); the service keeps running",
                    simulator.returncode,
                )
                simulator = None

        signals.wait(service, simulator_check)
    except _StopRequested:
        print("\nstart abandoned", flush=True)
    except _startup_errors() as exc:
        print(f"error: the demo could not start: {exc}", file=sys.stderr)
        code = 1
    finally:
        print("\nstopping...", flush=True)
        if simulator is not None and simulator.poll() is None:
            simulator.terminate()
            try:
                simulator.wait(15)
            except subprocess.TimeoutExpired:
                simulator.kill()
        if service is not None:
            service.stop()
        if demo_token_id is not None and settings.database_url:
            _revoke_demo_token(settings.database_url, demo_token_id)
        if demo_login and settings.database_url:
            _disable_demo_login(settings.database_url)
        for stop in reversed(stoppers):
            stop()
    print("clausewatch demo stopped.", flush=True)
    return code


def _demo_anchoring(data_dir: Path) -> dict[str, Path]:
    """The demo signs its ledger's tip like a deployment would: a key of its own, made on first
    use and kept beside (never in) the database, and a folder of anchors."""
    from alerts.anchors import generate_key

    folder = data_dir / "ledger"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = folder / "anchor.key"
    if not key.exists():
        with contextlib.suppress(FileExistsError):  # another demo made it meanwhile
            generate_key(key)
    return {"ledger_key_file": key, "ledger_anchor_dir": folder / "anchors"}


def _ensure_database(server_url: str, name: str) -> str:
    """`name` on the server of `server_url`, created on first use; its URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return database_named(server_url, name)


def _demo_token(database_url: str) -> tuple[str, int]:
    """A fresh admin token for this demo run (printed; stored only as a hash) and its id. It is
    revoked when the demo stops; should the demo die without stopping, it expires after
    DEMO_TOKEN_LIFETIME."""
    from api.tokens import create_token
    from store.pool import connect

    with connect(database_url) as conn:
        token, record = create_token(
            conn, "admin", label="clausewatch demo", lifetime=DEMO_TOKEN_LIFETIME
        )
        conn.commit()
    return token, record.id


def _demo_login(database_url: str) -> str:
    """The demo's user (an admin of every site) with a fresh password for this run, made on
    first use and enabled again on later runs; the password is printed, stored only as a hash,
    and stops working when the demo stops (`_disable_demo_login`)."""
    from api.users import create_user, enable_user, get_user, set_password
    from store.pool import connect

    password = secrets.token_urlsafe(12)
    with connect(database_url) as conn:
        if get_user(conn, DEMO_USER) is None:
            create_user(conn, DEMO_USER, "admin", password, display_name=DEMO_USER_NAME)
        else:
            set_password(conn, DEMO_USER, password)
            enable_user(conn, DEMO_USER)
        conn.commit()
    return password


def _disable_demo_login(database_url: str) -> None:
    from api.users import disable_user
    from store.pool import connect

    try:
        with connect(database_url) as conn:
            disable_user(conn, DEMO_USER)
            conn.commit()
    except Exception as exc:  # stopping goes on; say what is left to do by hand
        print(
            f"warning: could not disable the demo's user {DEMO_USER} ({exc});"
            f" disable it with: clausewatch user disable {DEMO_USER}",
            file=sys.stderr,
            flush=True,
        )
        return
    print(f"user {DEMO_USER} (demo) disabled", flush=True)


def _revoke_demo_token(database_url: str, token_id: int) -> None:
    from api.tokens import revoke_token
    from store.pool import connect

    try:
        with connect(database_url) as conn:
            revoke_token(conn, token_id)
            conn.commit()
    except Exception as exc:  # stopping goes on; say what is left to do by hand
        print(
            f"warning: could not revoke the demo's admin token {token_id} ({exc});"
            f" revoke it with: clausewatch token revoke {token_id}",
            file=sys.stderr,
            flush=True,
        )
        return
    print(f"admin token {token_id} (demo) revoked", flush=True)


def _simulated_time(settings: Any, config: Any, speed: float | None) -> str | None:
    """The banner's line on the demo's clock: the building lives on simulated time, from the
    scenario's start (resolved as `clausewatch simulate` resolves it), not on today's date.
    None when the scenario cannot be read (the simulator itself then says why)."""
    import time

    from simulators.scenario import ScenarioError, load_scenario, resolve_start, scenario_path

    try:
        scenario = load_scenario(scenario_path(DEMO_SCENARIO, settings.config_dir))
        site = config.sites[scenario.site]
        start = resolve_start(scenario.run.start, time.time(), site)
    except (ScenarioError, KeyError, ValueError, OSError):
        return None
    local = dt.datetime.fromtimestamp(start, site.zone())
    pace = speed or scenario.run.speed
    return (
        f"simulated time          site {scenario.site} lives on {local:%Y-%m-%d %H:%M} "
        f"({site.site.timezone}) onwards at {pace:g}x, not today: alerts, escalations and the "
        "pages' periods follow this data clock (data_time of GET /api/v1/sites)"
    )


def _start_simulator(settings: Any, mqtt_url: str, speed: float | None) -> subprocess.Popen[bytes]:
    """`clausewatch simulate` of the demo scenario, logged in with `mqtt_url`: passed in the
    environment (CLAUSEWATCH_MQTT_URL), not on its command line, where any user of the machine
    could read the password."""
    from clausewatch.embedded import die_with_parent

    command = [
        sys.executable,
        "-m",
        "clausewatch",
        "simulate",
        DEMO_SCENARIO,
        "--prefix",
        settings.topic_prefix,
    ]
    if speed is not None:
        command += ["--speed", str(speed)]
    env = _child_environment(settings)
    env["CLAUSEWATCH_MQTT_URL"] = mqtt_url  # the simulator's own login, not the service's
    if settings.config_dir is not None:
        env["CLAUSEWATCH_CONFIG_DIR"] = str(settings.config_dir)
    # Its own session: Ctrl-C in the terminal reaches the demo, which stops the simulator.
    return subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent(signal.SIGTERM),  # no simulator left publishing after a crash
    )

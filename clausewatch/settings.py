"""Service settings from the environment (prefix CLAUSEWATCH_) or command-line flags.

Unset URLs mean "not configured": `clausewatch demo` then starts embedded parts, while
`clausewatch run` refuses to start (a production service must be told where its store is).

The URLs carry passwords, so each can also be read from a file: `CLAUSEWATCH_DATABASE_URL_FILE`,
`CLAUSEWATCH_MIGRATION_DATABASE_URL_FILE` and `CLAUSEWATCH_MQTT_URL_FILE` name a file holding the
URL (as Docker and Kubernetes mount secrets; surrounding whitespace and the final newline are
dropped). Setting a URL and its file
together is an error. The URLs never appear in the settings' repr.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from compliance.evaluations import MAX_ESCALATION_STEPS
from store.roles import DatabaseRoles

if TYPE_CHECKING:
    from alerts.anchors import AnchorSource

ROLE_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAUSEWATCH_", extra="ignore")

    database_url: str | None = Field(default=None, repr=False)
    # The login that runs migrations (an owner of the schema: a superuser, or a member of the
    # owner role). Unset: the service and `clausewatch db upgrade` migrate with database_url.
    migration_database_url: str | None = Field(default=None, repr=False)
    # The owner role owns every table; the service acts as the service role (store/roles.py,
    # docs/storage.md "Roles"): it appends to the ledger but cannot change, truncate or disable it.
    database_owner_role: str = Field(default="clausewatch_owner", pattern=ROLE_PATTERN)
    database_service_role: str = Field(default="clausewatch_service", pattern=ROLE_PATTERN)
    mqtt_url: str | None = Field(default=None, repr=False)
    # Files holding those URLs instead (CLAUSEWATCH_DATABASE_URL_FILE, ...: Docker or Kubernetes
    # secrets), so a password need not sit in the environment's listing or a unit file.
    database_url_file: Path | None = None
    migration_database_url_file: Path | None = None
    mqtt_url_file: Path | None = None
    config_dir: Path | None = None
    topic_prefix: str = Field(default="cw", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # Where people open the service: notification messages link to `{this}/alerts/{id}`.
    # Unset: http://{http_host}:{http_port} (a wildcard host as 127.0.0.1).
    public_base_url: str | None = Field(
        default=None, max_length=512, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
    )
    # The API's limits (docs/api.md, "Limits"): bodies larger than this are refused unread (413).
    http_max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    # A request head must arrive within this; an idle kept-alive connection closes after this.
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    http_keep_alive_s: int = Field(default=5, gt=0)
    # Connections served at once, open streams included (503 beyond); open streams per token.
    http_max_connections: int = Field(default=200, gt=0)
    stream_max_per_token: int = Field(default=4, gt=0)
    # HTTP ingest (POST /api/v1/ingest/..., docs/api.md): devices log in with their broker
    # login, checked against this Mosquitto password file (`clausewatch broker files` writes
    # it); unset, HTTP ingest answers 503. A post waits at most this long for its commit (503
    # after), and at most this many posts wait at once (503 with Retry-After beyond).
    device_password_file: Path | None = None
    http_ingest_commit_timeout_s: float = Field(default=30.0, gt=0)
    http_ingest_max_in_flight: int = Field(default=256, gt=0)
    # Users' sign-in sessions (api/sessions.py): they end this long after sign-in, or after
    # this long without a request, whichever comes first.
    session_lifetime_s: float = Field(default=12 * 3600.0, gt=0, le=30 * 86400.0)
    session_idle_timeout_s: float = Field(default=1800.0, gt=0, le=30 * 86400.0)
    # Event-time reorder window: readings up to this much out of order are judged as if in order.
    lateness_s: float = Field(default=5.0, ge=0)
    # Readings older than this (relative to receive time) are dead letters: edge backlogs
    # younger than this still land.
    max_age_s: float = Field(default=7 * 86400.0, gt=0)
    # Readings stamped further than this into the future are dead letters (clock skew).
    max_future_skew_s: float = Field(default=300.0, ge=0)
    max_payload_bytes: int = Field(default=256 * 1024, gt=0)
    # Writer: flush a batch at this many rows, or after this delay, whichever comes first.
    batch_rows: int = Field(default=5000, gt=0)
    flush_interval_s: float = Field(default=0.2, gt=0)
    # Bounded queue between the MQTT thread and the writer; full means back-pressure.
    queue_capacity: int = Field(default=50_000, gt=0)
    retention_days: int = Field(default=400, gt=0)
    # Dead letters are kept this long for diagnosis, then deleted by the retention job.
    dead_letter_retention_days: int = Field(default=30, gt=0)
    # The latest status of a gateway or device that has published nothing for this long is
    # deleted (it was decommissioned or renamed); a live one refreshes its row on every change.
    device_status_retention_days: int = Field(default=400, gt=0)
    mqtt_client_id: str = "clausewatch-ingest"
    # The cluster mode (docs/cluster.md): the NATS servers (`nats://h1:4222,nats://h2:4222`) whose
    # JetStream holds what devices published to their MQTT listeners. Unset: MQTT (mqtt_url).
    broker_url: str | None = Field(default=None, repr=False, pattern=r"^nats://")
    # Sites are hashed onto this many partitions, fixed once for a cluster's database (the
    # servers' subject mapping says the same number).
    cluster_partitions: int = Field(default=64, ge=1, le=4096)
    # A stalled worker loses its partitions after this long without a heartbeat.
    cluster_lease_s: float = Field(default=3.0, gt=0.5, le=600)
    data_dir: Path | None = None  # embedded parts keep their data here (demo)
    # The service's log level; DEBUG adds, among others, each checkpoint's capture and save
    # window (bench/latency.py reads them). Third-party libraries stay at WARNING.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Anchors of the ledger's tip (alerts/anchors.py, docs/alerts.md "Anchors"): the Ed25519
    # private key signing them (`clausewatch ledger keygen`; never in the database), the folder
    # the signed anchors are written to, and how often. Both paths set: the service anchors.
    ledger_key_file: Path | None = None
    ledger_anchor_dir: Path | None = None
    ledger_anchor_interval_s: float = Field(default=3600.0, gt=0)
    # What `ledger verify` and GET /api/v1/ledger/verify check anchors with; unset: the key
    # file's `.pub` beside it.
    ledger_public_key_file: Path | None = None
    # Overdue improvement actions (限期整改): the owner is told at the deadline, then level n
    # of the site's escalation chain this many days after it (`[3, 7]`: level 1 three days
    # late, level 2 a week late), as JSON in CLAUSEWATCH_ACTION_ESCALATION_DAYS.
    action_escalation_days: Annotated[
        list[Annotated[float, Field(gt=0, le=365)]], Field(max_length=MAX_ESCALATION_STEPS)
    ] = [3.0, 7.0]

    @field_validator("action_escalation_days")
    @classmethod
    def _increasing(cls, days: list[float]) -> list[float]:
        if any(later <= earlier for earlier, later in itertools.pairwise(days)):
            raise ValueError("each escalation step comes later than the one before")
        return days

    def action_escalation_delays(self) -> tuple[dt.timedelta, ...]:
        return tuple(dt.timedelta(days=d) for d in self.action_escalation_days)

    def alert_link_base(self) -> str:
        """`public_base_url`, or the API's own address when it is unset."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("", "0.0.0.0", "::") else self.http_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.http_port}"

    def database_roles(self) -> DatabaseRoles:
        return DatabaseRoles(owner=self.database_owner_role, service=self.database_service_role)

    def ledger_anchor_source(self) -> AnchorSource | None:
        """Where verification reads anchors from; None unless the folder and a public key
        are both known."""
        public_key = self.ledger_public_key()
        if self.ledger_anchor_dir is None or public_key is None:
            return None
        from alerts.anchors import AnchorSource

        return AnchorSource(self.ledger_anchor_dir, (public_key,))

    def ledger_public_key(self) -> Path | None:
        if self.ledger_public_key_file is not None:
            return self.ledger_public_key_file
        if self.ledger_key_file is not None:
            from alerts.anchors import public_key_path  # cryptography: only when used

            return public_key_path(self.ledger_key_file)
        return None

    @model_validator(mode="after")
    def _urls_from_files(self) -> Settings:
        for name in ("database_url", "migration_database_url", "mqtt_url"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            variable = f"CLAUSEWATCH_{name.upper()}"
            if getattr(self, name) is not None:
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            setattr(self, name, read_secret_file(path))
        return self


def read_secret_file(path: Path) -> str:
    """The secret a file holds (a URL with its password), without surrounding whitespace.
    Raises ValueError, naming the file, when it cannot be read or is empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read {path}: {reason}") from None
    value = text.strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


def settings_problems(exc: ValidationError) -> str:
    """The problems of settings that could not be loaded, one line (no pydantic boilerplate);
    a field's problem names its variable."""
    return "; ".join(
        (f"CLAUSEWATCH_{str(error['loc'][0]).upper()}: " if error["loc"] else "")
        + str(error["msg"]).removeprefix("Value error, ")
        for error in exc.errors()
    )

"""Routing policies (issue 20), in the spirit of Alertmanager's routes: which receivers (webhook
targets, by name) hear of an alert, and how its notices are grouped, repeated and followed up.

A route matches an alert by its site (`sites`), the site's organisation path (`match.org`, a
prefix of rules/site.py `org`), a space subtree (`match.spaces`: the alert's space or one of its
ancestors), the clause's domain, the severity and the alert's kind; an empty matcher matches
everything. Routes are tried in order (`position`, then id): every matching route adds its
receivers, and the first matching route without `continue` ends the walk. The default route
serves an alert no other route matched. What routes add comes after what notify.py chooses
without them (the level's broadcast targets, then the party's contacts.webhook): a target named
twice is notified once.

Grouping (`group_wait`, `group_interval`): the notices of one site and clause to one target are
one message. The first notice of a group waits `group_wait` for the rest; once a message has gone,
new notices of the group wait until `group_interval` after it. The route that chose a receiver
decides its timings; a receiver chosen without a route takes the first matching route's.
`repeat_interval` is the route's reminder interval (notify.py's reminders; none: the target's),
`send_resolved: false` keeps resolved and closed notices from its receivers.

Routes live in `notification_routes` (migration 0033): from the config directory's `routes.yaml`
(`sync_file`, at every start: the file's routes replace the file's routes of the last start) and
from the API (`add_route`, `change_route`, `remove_route`). Every change is a ledger entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from rules.durations import Duration
from rules.site import ID_PATTERN, WEBHOOK_TARGET_PATTERN, SiteModel
from store import ledger
from store.times import require_aware

ROUTE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# Alertmanager's defaults: wait half a minute for the rest of a group, then at most one message
# of the group every five minutes.
DEFAULT_GROUP_WAIT_S = 30
DEFAULT_GROUP_INTERVAL_S = 300
MAX_GROUP_WAIT_S = 3600
MAX_GROUP_INTERVAL_S = 86400
MAX_ROUTES = 500
# Routes of the file are placed by their order in it (0, 10, 20, ...); an API route without a
# position goes after every route there is.
POSITION_STEP = 10
MAX_POSITION = 100000

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
RouteName = Annotated[str, StringConstraints(pattern=ROUTE_NAME_PATTERN)]
Receiver = Annotated[str, StringConstraints(pattern=WEBHOOK_TARGET_PATTERN)]
Domain = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_*.-]{1,64}$")]
Severity = Literal["critical", "major", "warning", "info"]
AlertKind = Literal["violation", "warning", "data_quality"]


class Matchers(BaseModel):
    """What an alert must have for the route to match; an empty list matches anything.
    `org`: a prefix of the site's organisation path (city, district, unit); `spaces`: space
    subtrees (the alert's space or an ancestor is one of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    org: Annotated[list[Id], Field(max_length=8)] = []
    spaces: Annotated[list[Id], Field(max_length=100)] = []
    domains: Annotated[list[Domain], Field(max_length=50)] = []
    severities: Annotated[list[Severity], Field(max_length=4)] = []
    kinds: Annotated[list[AlertKind], Field(max_length=3)] = []


class RouteSpec(BaseModel):
    """A route as written in routes.yaml and sent to the API. Durations are seconds or text
    ("30s", "5m", "4h")."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: RouteName
    default: bool = False
    position: Annotated[int, Field(ge=0, le=MAX_POSITION)] | None = None
    sites: Annotated[list[Id], Field(max_length=200)] = []
    match: Matchers = Matchers()
    receivers: Annotated[list[Receiver], Field(min_length=1, max_length=20)]
    continue_: bool = Field(False, alias="continue")
    group_wait: Duration = float(DEFAULT_GROUP_WAIT_S)
    group_interval: Duration = float(DEFAULT_GROUP_INTERVAL_S)
    repeat_interval: Duration | None = None
    send_resolved: bool = True

    @model_validator(mode="after")
    def _bounds(self) -> RouteSpec:
        if self.group_wait > MAX_GROUP_WAIT_S:
            raise ValueError("group_wait is at most 1h")
        if self.group_interval > MAX_GROUP_INTERVAL_S:
            raise ValueError("group_interval is at most 1d")
        if self.repeat_interval is not None and not 60 <= self.repeat_interval <= 604800:
            raise ValueError("repeat_interval is between 1m and 7d")
        if self.default and (self.sites or self.match != Matchers() or self.continue_):
            raise ValueError(
                "the default route matches what no other route did: no sites, match or continue"
            )
        if len(set(self.receivers)) != len(self.receivers):
            raise ValueError("a receiver is named twice")
        return self


class RoutesFile(BaseModel):
    """The config directory's routes.yaml: `routes`, in the order they are tried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: Annotated[list[RouteSpec], Field(max_length=MAX_ROUTES)] = []

    @model_validator(mode="after")
    def _unique(self) -> RoutesFile:
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("route names are unique")
        if sum(r.default for r in self.routes) > 1:
            raise ValueError("one route at most is the default")
        return self


@dataclass(frozen=True, slots=True)
class Route:
    """A stored route (ROUTES_QUERY)."""

    id: int
    name: str
    position: int
    is_default: bool
    sites: tuple[str, ...]
    matchers: Matchers
    receivers: tuple[str, ...]
    continue_matching: bool
    group_wait_s: int
    group_interval_s: int
    repeat_interval_s: int | None
    send_resolved: bool
    owner: int | None = None  # a user's subscription (alerts/subscriptions.py): the user's id


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What routes match on: the alert's site, the site's organisation path, its space with the
    space's ancestors (itself first), the clause's domain, the severity and the kind."""

    site: str
    org: tuple[str, ...]
    lineage: tuple[str, ...]
    domain: str | None
    severity: str
    kind: str


@dataclass(frozen=True, slots=True)
class Routing:
    """What notify.notification_rows routes with: the stored routes and the site models of the
    messages' sites (for the organisation path and the space tree)."""

    routes: Sequence[Route]
    sites: Mapping[str, SiteModel]


def facts(site: SiteModel | None, alert: Mapping[str, Any]) -> AlertFacts:
    """An alert summary (notify.alert_summary) as routes see it."""
    space = alert["subject"]["space"]
    lineage: tuple[str, ...] = (space,)
    if site is not None and space in site.parent_of:
        lineage = tuple(site.ancestors(space))
    return AlertFacts(
        site=alert["site"],
        org=tuple(site.site.org) if site is not None else (),
        lineage=lineage,
        domain=alert["clause"].get("domain"),
        severity=alert["severity"],
        kind=alert["kind"],
    )


def matches(route: Route, alert: AlertFacts) -> bool:
    """Whether every matcher of the route holds for the alert (the default route: always)."""
    m = route.matchers
    return (
        (not route.sites or alert.site in route.sites)
        and (not m.org or alert.org[: len(m.org)] == tuple(m.org))
        and (not m.spaces or any(s in alert.lineage for s in m.spaces))
        and (not m.domains or alert.domain in m.domains)
        and (not m.severities or alert.severity in m.severities)
        and (not m.kinds or alert.kind in m.kinds)
    )


def select(routes: Iterable[Route], alert: AlertFacts) -> list[Route]:
    """The routes an alert takes, in order: each matching route until the first one without
    `continue`; the default route when no other matched. Users' subscriptions take no part."""
    ordered = sorted((r for r in routes if r.owner is None), key=lambda r: (r.position, r.id))
    taken: list[Route] = []
    for route in ordered:
        if route.is_default or not matches(route, alert):
            continue
        taken.append(route)
        if not route.continue_matching:
            break
    if not taken:
        taken = [r for r in ordered if r.is_default][:1]
    return taken


def subscribed(routes: Iterable[Route], alert: AlertFacts) -> list[Route]:
    """The users' subscriptions (owned routes) that match the alert, each on its own: one
    user's choice neither ends nor widens the deployment's walk or another user's."""
    return [r for r in routes if r.owner is not None and matches(r, alert)]


# ---- stored routes ----

ROUTES_QUERY = (
    "SELECT id, name, position, is_default, sites, matchers, receivers, continue_matching,"
    " group_wait_s, group_interval_s, repeat_interval_s, send_resolved, owner_user"
    " FROM notification_routes ORDER BY position, id"
)


def routes_from_rows(rows: Iterable[Sequence[Any]]) -> list[Route]:
    """ROUTES_QUERY's rows as routes."""
    return [
        Route(
            id=r[0],
            name=r[1],
            position=r[2],
            is_default=r[3],
            sites=tuple(r[4]),
            matchers=Matchers.model_validate(r[5]),
            receivers=tuple(r[6]),
            continue_matching=r[7],
            group_wait_s=r[8],
            group_interval_s=r[9],
            repeat_interval_s=r[10],
            send_resolved=r[11],
            owner=r[12],
        )
        for r in rows
    ]


def load(conn: psycopg.Connection[Any]) -> list[Route]:
    return routes_from_rows(conn.execute(ROUTES_QUERY).fetchall())


class RouteInvalid(ValueError):
    """A route that cannot be stored; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RouteExists(Exception):
    """A route of that name (or a second default route) exists."""


_COLUMNS = (
    "name, position, is_default, sites, matchers, receivers, continue_matching, group_wait_s,"
    " group_interval_s, repeat_interval_s, send_resolved"
)


def _values(spec: RouteSpec, position: int) -> tuple[Any, ...]:
    return (
        spec.name,
        position,
        spec.default,
        list(spec.sites),
        Jsonb(spec.match.model_dump()),
        list(spec.receivers),
        spec.continue_,
        round(spec.group_wait),
        round(spec.group_interval),
        None if spec.repeat_interval is None else round(spec.repeat_interval),
        spec.send_resolved,
    )


def check(conn: psycopg.Connection[Any], spec: RouteSpec) -> None:
    """Raises RouteInvalid for sites that do not exist or receivers that are no target serving
    the route's sites (a target of another site would fail every notice)."""
    if spec.sites:
        known = {
            r[0]
            for r in conn.execute("SELECT id FROM sites WHERE id = ANY(%s)", (list(spec.sites),))
        }
        missing = sorted(set(spec.sites) - known)
        if missing:
            raise RouteInvalid("sites", f"unknown sites: {missing}")
    rows = conn.execute(
        "SELECT name, site FROM webhook_targets WHERE name = ANY(%s)", (list(spec.receivers),)
    ).fetchall()
    serving = {name: site for name, site in rows}
    unknown = [r for r in spec.receivers if r not in serving]
    if unknown:
        raise RouteInvalid("receivers", f"no webhook target named {unknown}")
    for name, site in serving.items():
        if site is not None and (not spec.sites or set(spec.sites) != {site}):
            raise RouteInvalid(
                "receivers",
                f"target {name!r} serves site {site} only: the route's sites must be [{site}]",
            )


def add_route(
    conn: psycopg.Connection[Any],
    spec: RouteSpec,
    actor: str,
    now: dt.datetime,
    *,
    source: Literal["file", "api"] = "api",
    owner: int | None = None,
) -> int:
    """Stores a route (after `check`); RouteExists when the name is taken or a default exists.
    Without a position it goes after every route. `owner`: the user whose subscription it is
    (alerts/subscriptions.py). Does not commit."""
    require_aware(now, "now")
    check(conn, spec)
    position = spec.position
    if position is None:
        row = conn.execute("SELECT max(position) FROM notification_routes").fetchone()
        last = row[0] if row is not None and row[0] is not None else -POSITION_STEP
        position = min(last + POSITION_STEP, MAX_POSITION)
    inserted = conn.execute(
        f"INSERT INTO notification_routes ({_COLUMNS}, source, created_by, created_at,"
        " updated_by, updated_at, owner_user) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
        (*_values(spec, position), source, actor, now, actor, now, owner),
    ).fetchone()
    if inserted is None:
        raise RouteExists(
            "a default route exists" if spec.default else f"a route named {spec.name!r} exists"
        )
    route_id = int(inserted[0])
    _record(conn, "route.added", route_id, spec, position, actor, now)
    return route_id


def change_route(
    conn: psycopg.Connection[Any], route_id: int, spec: RouteSpec, actor: str, now: dt.datetime
) -> None:
    """Replaces a route with `spec` (its name may change; without a position it keeps its
    place). LookupError for an unknown id, RouteExists for a taken name. Does not commit."""
    require_aware(now, "now")
    current = conn.execute(
        "SELECT position FROM notification_routes WHERE id = %s FOR UPDATE", (route_id,)
    ).fetchone()
    if current is None:
        raise LookupError(route_id)
    check(conn, spec)
    position = current[0] if spec.position is None else spec.position
    try:
        with conn.transaction():
            conn.execute(
                f"UPDATE notification_routes SET ({_COLUMNS}, updated_by, updated_at)"
                " = (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) WHERE id = %s",
                (*_values(spec, position), actor, now, route_id),
            )
    except psycopg.errors.UniqueViolation:
        raise RouteExists(f"a route named {spec.name!r} (or a default route) exists") from None
    _record(conn, "route.changed", route_id, spec, position, actor, now)


def remove_route(
    conn: psycopg.Connection[Any], route_id: int, actor: str, now: dt.datetime
) -> None:
    """Removes a route (notifications keep the name of the route that chose them). LookupError
    for an unknown id. Does not commit."""
    row = conn.execute(
        "DELETE FROM notification_routes WHERE id = %s RETURNING name", (route_id,)
    ).fetchone()
    if row is None:
        raise LookupError(route_id)
    ledger.append(
        conn,
        [
            ledger.Entry(
                kind="route.removed",
                entity=f"route:{route_id}",
                payload={"name": row[0], "actor": actor},
            )
        ],
        require_aware(now, "now"),
    )


def route_rows(
    conn: psycopg.Connection[Any], sites: Iterable[str] | None = None, route_id: int | None = None
) -> list[dict[str, Any]]:
    """Stored routes as the API shows them, in the order they are tried; with `sites` (a
    site-scoped token's), only the routes for some of those sites and no others. Users'
    subscriptions are not among them (alerts/subscriptions.py shows those)."""
    clauses: list[str] = ["owner_user IS NULL"]
    params: list[Any] = []
    if sites is not None:
        clauses.append("sites <> '{}' AND sites <@ %s")
        params.append(list(sites))
    if route_id is not None:
        clauses.append("id = %s")
        params.append(route_id)
    where = f" WHERE {' AND '.join(clauses)}"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, name, position, is_default AS default, sites, matchers AS match,"
            " receivers, continue_matching AS continue, group_wait_s, group_interval_s,"
            " repeat_interval_s, send_resolved, source, created_by, created_at, updated_by,"
            f" updated_at FROM notification_routes{where} ORDER BY position, id",
            params,
        )
        return cur.fetchall()


def sync_file(
    conn: psycopg.Connection[Any], routes: RoutesFile, actor: str, now: dt.datetime
) -> list[str]:
    """Makes the file's routes (routes.yaml, in its order) the stored routes from the file:
    new ones added, changed ones replaced, those gone from the file removed; routes made
    through the API stay (a file route takes over an API route of its name). Returns what
    changed ("added x", ...); an unchanged file writes nothing. RouteInvalid (naming the
    route) for a receiver or site that does not exist. Does not commit. Takes the
    ledger's lock first, so processes starting together sync one after the other."""
    ledger.lock(conn)
    stored = {r["name"]: r for r in route_rows(conn)}
    changes: list[str] = []
    for index, spec in enumerate(routes.routes):
        position = spec.position if spec.position is not None else index * POSITION_STEP
        placed = spec.model_copy(update={"position": position})
        current = stored.get(spec.name)
        try:
            if current is None:
                add_route(conn, placed, actor, now, source="file")
                changes.append(f"added {spec.name}")
            elif current["source"] != "file" or _differs(current, placed):
                change_route(conn, current["id"], placed, actor, now)
                conn.execute(
                    "UPDATE notification_routes SET source = 'file' WHERE id = %s",
                    (current["id"],),
                )
                changes.append(f"changed {spec.name}")
        except RouteInvalid as exc:
            raise RouteInvalid(exc.field, f"route {spec.name!r}: {exc}") from None
    named = {spec.name for spec in routes.routes}
    for name, row in stored.items():
        if row["source"] == "file" and name not in named:
            remove_route(conn, row["id"], actor, now)
            changes.append(f"removed {name}")
    return changes


def _differs(row: Mapping[str, Any], spec: RouteSpec) -> bool:
    values = _values(spec, spec.position or 0)
    stored = (
        row["name"],
        row["position"],
        row["default"],
        list(row["sites"]),
        row["match"],
        list(row["receivers"]),
        row["continue"],
        row["group_wait_s"],
        row["group_interval_s"],
        row["repeat_interval_s"],
        row["send_resolved"],
    )
    wanted = (*values[:4], spec.match.model_dump(), *values[5:])
    return stored != wanted


def _record(
    conn: psycopg.Connection[Any],
    kind: str,
    route_id: int,
    spec: RouteSpec,
    position: int,
    actor: str,
    now: dt.datetime,
) -> None:
    payload = spec.model_dump(mode="json", by_alias=True)
    payload["position"] = position
    ledger.append(
        conn,
        [ledger.Entry(kind=kind, entity=f"route:{route_id}", payload={**payload, "actor": actor})],
        now,
    )

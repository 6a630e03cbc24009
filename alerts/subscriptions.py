"""Per-user subscriptions (issue 20): a named user (api/users.py) chooses which alerts reach them
and by which of their own contact points.

A user's contact points (`user_contacts`, migration 0035) are an e-mail address and a mobile
number, set by the user or an admin; shown to that user and admins only, and never written to
the ledger or a log (their changes are, without the values).

A subscription is a route (alerts/routing.py) owned by the user: the same matchers (sites, org
prefix, space subtrees, clause domains, severities, kinds), the same grouping, rate limits,
send-attempt records and silences. Its receivers are the deployment's e-mail target (SMTP) and
SMS gateway target (`webhook_targets` of kind email / sms serving every site); a notice for the
subscriber goes through that target to the user's contact point alone. Owned routes take no part
in the deployment's walk (routing.select): each adds its own notices (routing.subscribed).

A subscription never widens what its user sees: its sites must be among the user's, its org
prefix within the user's organisation (`check_scope`); and when a notice is due, one for a user
who is disabled, may no longer see the site, or has no such contact point any more is
`withheld`, not sent (`withhold_if_unseen`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from alerts import routing
from store import ledger
from store.times import require_aware

MAX_SUBSCRIPTIONS = 20  # per user
EMAIL_PATTERN = r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$"
MOBILE_PATTERN = r"^\+?[0-9]{5,20}$"
SUBSCRIPTION_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,39}$"
Channel = Literal["email", "sms"]
# The contact point each channel needs (user_contacts column).
CONTACT_OF: dict[str, str] = {"email": "email", "sms": "mobile"}


class Contacts(BaseModel):
    """A user's own contact points; null: none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: Annotated[str, StringConstraints(pattern=EMAIL_PATTERN, max_length=254)] | None = None
    mobile: Annotated[str, StringConstraints(pattern=MOBILE_PATTERN)] | None = None


class SubscriptionSpec(BaseModel):
    """What a user subscribes to (routing.Matchers and `sites`) and by which contact points."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=SUBSCRIPTION_NAME_PATTERN)]
    sites: Annotated[list[routing.Id], Field(max_length=200)] = []
    match: routing.Matchers = routing.Matchers()
    channels: Annotated[list[Channel], Field(min_length=1, max_length=2)] = ["email"]
    send_resolved: bool = True

    @model_validator(mode="after")
    def _unique(self) -> SubscriptionSpec:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("a channel is named twice")
        return self


class Subscriber(BaseModel):
    """The user a subscription is for: id and scope (api/users.UserRecord)."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    sites: tuple[str, ...]
    org: tuple[str, ...]


class OutOfScope(Exception):
    """A subscription that would reach past what its user may see (403)."""


class SubscriptionInvalid(ValueError):
    """A subscription that cannot be stored (422); `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# ---- contact points ----


def get_contacts(conn: psycopg.Connection[Any], user_id: int) -> Contacts:
    row = conn.execute(
        "SELECT email, mobile FROM user_contacts WHERE user_id = %s", (user_id,)
    ).fetchone()
    return Contacts() if row is None else Contacts(email=row[0], mobile=row[1])


def set_contacts(
    conn: psycopg.Connection[Any],
    user: Subscriber,
    contacts: Contacts,
    actor: str,
    now: dt.datetime,
) -> None:
    """Replaces the user's contact points; the ledger says which were set, not their values.
    Does not commit."""
    require_aware(now, "now")
    conn.execute(
        "INSERT INTO user_contacts (user_id, email, mobile, updated_by, updated_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO UPDATE SET"
        " (email, mobile, updated_by, updated_at) = (EXCLUDED.email, EXCLUDED.mobile,"
        " EXCLUDED.updated_by, EXCLUDED.updated_at)",
        (user.id, contacts.email, contacts.mobile, actor, now),
    )
    ledger.append(
        conn,
        [
            ledger.Entry(
                kind="user.contacts_set",
                entity=f"user:{user.name}",
                payload={
                    "actor": actor,
                    "email": contacts.email is not None,
                    "mobile": contacts.mobile is not None,
                },
            )
        ],
        now,
    )


# ---- subscriptions ----


def check_scope(user: Subscriber, visible: frozenset[str] | None, spec: SubscriptionSpec) -> None:
    """OutOfScope when the subscription names a site the user may not see (`visible`: the
    user's sites now, None: every site) or an org prefix outside the user's organisation."""
    if visible is not None:
        outside = sorted(set(spec.sites) - visible)
        if outside:
            raise OutOfScope(f"this user cannot see sites {outside}")
    org = tuple(spec.match.org)
    if org and user.org and org[: len(user.org)] != user.org[: len(org)]:
        raise OutOfScope("the org prefix is outside this user's organisation")


def _route_name(user: Subscriber, name: str) -> str:
    return f"user-{user.id}.{name}"


def add_subscription(
    conn: psycopg.Connection[Any],
    user: Subscriber,
    visible: frozenset[str] | None,
    spec: SubscriptionSpec,
    actor: str,
    now: dt.datetime,
) -> int:
    """Stores the subscription as a route owned by the user (after `check_scope`); its receivers
    are the deployment's e-mail / SMS targets for every site. SubscriptionInvalid when a channel
    has no target or the user lacks its contact point, or past MAX_SUBSCRIPTIONS;
    routing.RouteExists for a name the user already used. Does not commit."""
    check_scope(user, visible, spec)
    contacts = get_contacts(conn, user.id)
    receivers: list[str] = []
    for channel in spec.channels:
        if getattr(contacts, CONTACT_OF[channel]) is None:
            raise SubscriptionInvalid(
                "channels", f"set your {CONTACT_OF[channel]} first (/api/v1/me/contacts)"
            )
        row = conn.execute(
            "SELECT name FROM webhook_targets WHERE enabled AND site IS NULL AND kind = %s"
            " ORDER BY id LIMIT 1",
            (channel,),
        ).fetchone()
        if row is None:
            raise SubscriptionInvalid("channels", f"this deployment has no {channel} channel")
        receivers.append(row[0])
    count = conn.execute(
        "SELECT count(*) FROM notification_routes WHERE owner_user = %s", (user.id,)
    ).fetchone()
    if count is not None and count[0] >= MAX_SUBSCRIPTIONS:
        raise SubscriptionInvalid("name", f"at most {MAX_SUBSCRIPTIONS} subscriptions a user")
    route = routing.RouteSpec(
        name=_route_name(user, spec.name),
        sites=spec.sites,
        match=spec.match,
        receivers=receivers,
        send_resolved=spec.send_resolved,
    )
    try:
        return routing.add_route(conn, route, actor, now, owner=user.id)
    except routing.RouteInvalid as exc:
        raise SubscriptionInvalid(exc.field, str(exc)) from None


def list_subscriptions(conn: psycopg.Connection[Any], user: Subscriber) -> list[dict[str, Any]]:
    """The user's subscriptions as the API shows them (the channels, not the targets)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT r.id, r.name, r.sites, r.matchers AS match, r.send_resolved, r.created_at,"
            " ARRAY(SELECT t.kind FROM webhook_targets t WHERE t.name = ANY(r.receivers)"
            " ORDER BY t.kind) AS channels"
            " FROM notification_routes r WHERE r.owner_user = %s ORDER BY r.id",
            (user.id,),
        ).fetchall()
    prefix = _route_name(user, "")
    return [{**r, "name": r["name"].removeprefix(prefix)} for r in rows]


def remove_subscription(
    conn: psycopg.Connection[Any],
    user: Subscriber,
    subscription_id: int,
    actor: str,
    now: dt.datetime,
) -> None:
    """LookupError unless it is one of the user's subscriptions. Does not commit."""
    row = conn.execute(
        "SELECT 1 FROM notification_routes WHERE id = %s AND owner_user = %s",
        (subscription_id, user.id),
    ).fetchone()
    if row is None:
        raise LookupError(subscription_id)
    routing.remove_route(conn, subscription_id, actor, now)


# ---- at send time ----


def withhold_if_unseen(
    conn: psycopg.Connection[Any], notification: dict[str, Any], now: dt.datetime
) -> bool:
    """Whether a due notice for a subscriber (`user_id`) must not go: the user is unknown or
    disabled, may no longer see the site (its sites or organisation now), or has no contact point
    for the target's channel. If so it ends `withheld` with the reason. Does not commit."""
    user_id = notification.get("user_id")
    if user_id is None:
        return False
    reason = _unseen(conn, int(user_id), notification)
    if reason is None:
        return False
    conn.execute(
        "UPDATE notifications SET state = 'withheld', last_error = %s WHERE id = %s",
        (reason, notification["id"]),
    )
    return True


def _unseen(
    conn: psycopg.Connection[Any], user_id: int, notification: dict[str, Any]
) -> str | None:
    row = conn.execute(
        "SELECT u.disabled_at IS NOT NULL,"
        " cardinality(u.sites) = 0 AND cardinality(u.org) = 0 OR %(site)s = ANY(u.sites)"
        " OR (cardinality(u.org) > 0 AND EXISTS (SELECT 1 FROM sites s WHERE s.id = %(site)s"
        "   AND jsonb_typeof(s.info->'org') = 'array'"
        "   AND (ARRAY(SELECT jsonb_array_elements_text(s.info->'org')))"
        "       [1:cardinality(u.org)] = u.org))"
        " FROM users u WHERE u.id = %(user)s",
        {"site": notification["site"], "user": user_id},
    ).fetchone()
    if row is None:
        return "the subscriber no longer exists"
    if row[0]:
        return "the subscriber is disabled"
    if not row[1]:
        return "the subscriber can no longer see this site"
    needs = CONTACT_OF.get(notification.get("kind") or "")
    if needs is not None and not notification.get(f"user_{needs}"):
        return f"the subscriber has no {needs}"
    return None

"""信息反馈 (issue 21): an occupant or a member of staff reports a problem from a space's public
page (its QR code) with no account: a category the clauses covering the space offer (too cold,
too hot, not cleaned, lift, other), bounded free text, an optional photo. It becomes a feedback
item linked to the space and those clauses, which a facility manager triages (new → triaged →
resolved / rejected, or new → rejected; each step with who and a note), counted in the
statistics and the quarterly reports.

What is kept, and what is not: the item stores no client address, name or account. The public
form is rate-limited per client address and per space in PostgreSQL (so the limit holds across
every process of the service); the address is kept there only as an HMAC, only for the window.
The ledger records each item with the digests of its text and photo, not the text itself (it
is append-only; what a person wrote may name people and must stay removable), and each triage
step with its actor and note. Tables: migration 0064.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from compliance.rates import SiteFacts, selection, versions_in_force
from config.templates import render
from store import ledger, registry

Category = Literal["too_cold", "too_hot", "not_cleaned", "lift", "other"]
CATEGORIES: tuple[Category, ...] = get_args(Category)
# How each category is named on the public form, the pages and the reports: (Chinese, English).
CATEGORY_NAMES: dict[str, tuple[str, str]] = {
    "too_cold": ("太冷", "Too cold"),
    "too_hot": ("太热", "Too hot"),
    "not_cleaned": ("未打扫干净", "Not cleaned"),
    "lift": ("电梯故障", "Lift problem"),
    "other": ("其他问题", "Something else"),
}
State = Literal["new", "triaged", "resolved", "rejected"]
STATES: tuple[State, ...] = get_args(State)
STATE_NAMES: dict[str, tuple[str, str]] = {
    "new": ("待分拣", "new"),
    "triaged": ("已受理", "triaged"),
    "resolved": ("已解决", "resolved"),
    "rejected": ("不予处理", "rejected"),
}
# The steps a facility manager may take from each state.
NEXT_STATES: dict[str, frozenset[str]] = {
    "new": frozenset({"triaged", "rejected"}),
    "triaged": frozenset({"resolved", "rejected"}),
}
Lang = Literal["zh", "en"]

MAX_TEXT = 1000  # characters of free text, after control characters are removed
PHOTO_MAX_BYTES = 5 * 1024 * 1024
# A photo's type, read from its first bytes (never from its name or the declared type).
PHOTO_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"WEBP", 8, "image/webp"),  # after "RIFF" and the chunk size
)
# Space types the form names in words; any other is shown as it is in the site model.
SPACE_TYPE_NAMES: dict[str, tuple[str, str]] = {
    "office": ("办公室", "office"),
    "meeting": ("会议室", "meeting room"),
    "toilet": ("卫生间", "toilet"),
    "elevator": ("电梯", "lift"),
    "lobby": ("大厅", "lobby"),
    "canteen": ("食堂", "canteen"),
}


@dataclass(frozen=True, slots=True)
class Limit:
    submissions: int
    window: dt.timedelta


# Accepted submissions per client address (an IPv6 client counts by its /64) and per space.
ADDRESS_LIMIT = Limit(5, dt.timedelta(minutes=10))
SPACE_LIMIT = Limit(20, dt.timedelta(minutes=10))
# Advisory locks of the limiter: (class, hashtext(key)); two-key locks never meet the ledger's.
LIMIT_LOCK_CLASS = 0x66656564  # "feed"


class NoFeedbackPage(LookupError):
    """No such site or space, or the site has not opted in to public pages (all answer 404)."""


class BadFeedback(ValueError):
    """A field of the form is not acceptable; `field` names it, `message_zh` says it in
    Chinese (the exception's own message is English)."""

    def __init__(self, field: str, message: str, message_zh: str) -> None:
        super().__init__(message)
        self.field = field
        self.message_zh = message_zh


class RateLimited(Exception):
    def __init__(self, scope: Literal["address", "space"], retry_after_s: int) -> None:
        super().__init__(scope)
        self.scope = scope
        self.retry_after_s = retry_after_s


class UnknownItem(LookupError):
    pass


class StepNotAllowed(ValueError):
    """The item's state does not allow that step (e.g. resolving an item not triaged)."""


class FeedbackForm(BaseModel):
    """What the public form of a space shows: the site's name, the space's type (never its
    name: room names can name a person) and the categories its clauses offer."""

    site: str
    site_name: str
    space: str
    space_type: str
    categories: list[Category]


class FeedbackStep(BaseModel):
    state: State
    actor: str
    note: str
    at: dt.datetime


class FeedbackItem(BaseModel):
    id: int
    site: str
    space: str
    category: Category
    clauses: list[str]
    text: str
    lang: Lang
    state: State
    received_at: dt.datetime
    triaged_at: dt.datetime | None
    photo: str | None  # the photo's content type, when there is one
    steps: list[FeedbackStep]


class FeedbackCounts(BaseModel):
    """Feedback received at a site in a period, with each item's state as of the time asked
    about; time to triage = from receipt to the first step out of 'new' (a rejection too)."""

    received: int = 0
    by_category: dict[str, int] = {}
    by_state: dict[str, int] = {}
    by_clause: dict[str, int] = {}
    triaged: int = 0  # items with a first step by then
    mean_time_to_triage_s: float | None = None


# ---- the public form ----


def covering_clauses(
    conn: psycopg.Connection[Any], site: str, space: str, day: dt.date
) -> dict[str, dict[str, Any]]:
    """Clause id → its version's config, for the versions in force on `day` whose `applies_to`
    selects the space (data-quality clauses, which watch devices, left out)."""
    facts = SiteFacts(evaluated_at=dt.datetime.combine(day, dt.time(), dt.UTC))
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(
            "SELECT id, type, tags, parent FROM spaces WHERE site = %s AND retired_at IS NULL",
            (site,),
        ):
            facts.spaces[row["id"]] = row
        for row in cur.execute(
            "SELECT id, space, metrics FROM devices WHERE site = %s AND retired_at IS NULL",
            (site,),
        ):
            facts.devices[row["id"]] = row
    found = {}
    for clause_id, version in sorted(versions_in_force(conn, day).items()):
        config = version["config"]
        if config.get("domain") == "data_quality":
            continue
        spaces, _ = selection(facts, config.get("applies_to") or {})
        if space in spaces:
            found[clause_id] = config
    return found


def categories_for(clauses: Mapping[str, Mapping[str, Any]]) -> dict[Category, list[str]]:
    """The categories a space's clauses offer, each with the clauses it concerns: too cold for
    a lower bound on temperature, too hot for an upper one, not cleaned for cleaning clauses,
    lift for special equipment (TSG), and always 'other', concerning every clause."""
    found: dict[Category, list[str]] = {}
    for clause_id, config in clauses.items():
        lower, upper = _temperature_bounds(config.get("check") or {})
        domain = config.get("domain")
        event = str((config.get("check") or {}).get("event") or "")
        for category, applies in (
            ("too_cold", lower),
            ("too_hot", upper),
            ("not_cleaned", domain == "cleaning" or event.startswith("cleaning")),
            ("lift", domain == "special_equipment"),
        ):
            if applies:
                found.setdefault(category, []).append(clause_id)  # type: ignore[arg-type]
    ordered = {c: found[c] for c in CATEGORIES if c in found}
    ordered["other"] = list(clauses)
    return ordered


def _temperature_bounds(node: object) -> tuple[bool, bool]:
    """(bounds temperature from below, from above) anywhere in a check or its conditions."""
    lower = upper = False
    if isinstance(node, Mapping):
        if node.get("metric") == "temperature":
            op = node.get("op")
            lower = node.get("min") is not None or op in (">", ">=")
            upper = node.get("max") is not None or op in ("<", "<=")
        for key, value in node.items():
            if key == "when":  # a gate says when the clause applies, not what it bounds
                continue
            below, above = _temperature_bounds(value)
            lower, upper = lower or below, upper or above
    elif isinstance(node, list):
        for value in node:
            below, above = _temperature_bounds(value)
            lower, upper = lower or below, upper or above
    return lower, upper


def _public_space(conn: psycopg.Connection[Any], site: str, space: str) -> tuple[str, str]:
    """(the site's name, the space's type) of a public site's space in use; else NoFeedbackPage."""
    registered = registry.site_row(conn, site)
    if registered is None or registered.info.get("public") is not True:
        raise NoFeedbackPage(site)
    row = conn.execute(
        "SELECT type FROM spaces WHERE site = %s AND id = %s AND retired_at IS NULL",
        (site, space),
    ).fetchone()
    if row is None:
        raise NoFeedbackPage(f"{site}/{space}")
    return registered.name, str(row[0])


def feedback_form(
    conn: psycopg.Connection[Any], site: str, space: str, now: dt.datetime
) -> FeedbackForm:
    site_name, space_type = _public_space(conn, site, space)
    offered = categories_for(covering_clauses(conn, site, space, now.date()))
    return FeedbackForm(
        site=site,
        site_name=site_name,
        space=space,
        space_type=space_type,
        categories=list(offered),
    )


def render_feedback_html(
    form: FeedbackForm,
    lang: Lang,
    *,
    sent: bool = False,
    error: str | None = None,
    chosen: str | None = None,
    text: str = "",
) -> str:
    """The form of a space (templates/feedback.html, stylesheet /static/public.css); `sent`:
    the thanks after a report; `error`: what to correct or when to try again, with the
    person's own choice and text kept."""
    return render(
        "compliance",
        "feedback.html",
        form=form,
        lang=lang,
        sent=sent,
        error=error,
        chosen=chosen,
        text=text,
        names=CATEGORY_NAMES,
        space_type=SPACE_TYPE_NAMES.get(form.space_type, (form.space_type, form.space_type)),
        max_text=MAX_TEXT,
        max_photo=PHOTO_MAX_BYTES,
    )


def clean_text(raw: str) -> str:
    """The free text as stored: line breaks kept (as \\n), tabs as spaces, every other control
    or format character (NUL, escapes, bidirectional overrides) removed, trimmed; BadFeedback
    when longer than MAX_TEXT."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = "".join(
        ch for ch in text if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
    ).strip()
    if len(text) > MAX_TEXT:
        raise BadFeedback(
            "text", f"at most {MAX_TEXT} characters, please", f"说明请不超过 {MAX_TEXT} 个字"
        )
    return text


def photo_type(data: bytes) -> str | None:
    """image/jpeg, image/png or image/webp by the file's own first bytes; None for anything else."""
    for magic, offset, content_type in PHOTO_MAGIC:
        if data[offset : offset + len(magic)] == magic and (
            content_type != "image/webp" or data[:4] == b"RIFF"
        ):
            return content_type
    return None


def client_key(conn: psycopg.Connection[Any], address: str) -> str:
    """The limiter's key of a client address: an HMAC under the database's own secret (the
    address itself is never stored); an IPv6 client counts by its /64, which one user holds."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        counted = address
    else:
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            counted = str(parsed.ipv4_mapped)
        elif isinstance(parsed, ipaddress.IPv6Address):
            counted = str(ipaddress.ip_network(f"{parsed}/64", strict=False))
        else:
            counted = str(parsed)
    row = conn.execute("SELECT secret FROM feedback_limit_key").fetchone()
    assert row is not None, "migration 0064 stores the limiter's secret"
    digest = hmac.new(str(row[0]).encode(), counted.encode(), hashlib.sha256).hexdigest()
    return f"addr:{digest}"


def _admit(
    conn: psycopg.Connection[Any],
    keys: Sequence[tuple[str, Limit, Literal["address", "space"]]],
    now: dt.datetime,
) -> None:
    """Counts one submission against each key, or raises RateLimited (counting nothing) when a
    key has had its limit within its window. Serialised per key by advisory locks held to the
    end of the caller's transaction, so concurrent processes cannot both take the last place."""
    for key, _, _ in sorted(keys):
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LIMIT_LOCK_CLASS, key))
    longest = max(limit.window for _, limit, _ in keys)
    conn.execute("DELETE FROM feedback_hits WHERE at <= %s", (now - longest,))
    for key, limit, scope in keys:
        row = conn.execute(
            "SELECT count(*), min(at) FROM feedback_hits WHERE key = %s AND at > %s",
            (key, now - limit.window),
        ).fetchone()
        assert row is not None
        if row[0] >= limit.submissions:
            wait = (row[1] + limit.window - now).total_seconds()
            raise RateLimited(scope, max(1, int(wait + 0.999)))
    for key, _, _ in keys:
        conn.execute("INSERT INTO feedback_hits (key, at) VALUES (%s, %s)", (key, now))


def submit_feedback(
    conn: psycopg.Connection[Any],
    *,
    site: str,
    space: str,
    category: str,
    text: str,
    photo: bytes | None,
    lang: Lang,
    client: str,
    now: dt.datetime,
) -> int:
    """Stores a report from the public form; returns its id. Raises NoFeedbackPage, BadFeedback
    (a category the space does not offer, text too long, a photo too large or of another
    type), RateLimited. Does not commit (a RateLimited leaves nothing to commit)."""
    _public_space(conn, site, space)
    offered = categories_for(covering_clauses(conn, site, space, now.date()))
    if category not in offered:
        raise BadFeedback(
            "category",
            f"choose what is wrong: one of {', '.join(offered)}",
            "请选择遇到的问题类型",
        )
    body = clean_text(text)
    content_type = None
    if photo:
        if len(photo) > PHOTO_MAX_BYTES:
            raise BadFeedback(
                "photo",
                f"a photo of at most {PHOTO_MAX_BYTES // 1048576} MB, please",
                f"照片请不超过 {PHOTO_MAX_BYTES // 1048576} MB",
            )
        content_type = photo_type(photo)
        if content_type is None:
            raise BadFeedback(
                "photo", "a JPEG, PNG or WebP photo, please", "照片请使用 JPEG、PNG 或 WebP 格式"
            )
    if category == "other" and not body and not photo:
        raise BadFeedback("text", "say in a few words what the problem is", "请简单说明遇到的问题")
    _admit(
        conn,
        [
            (client_key(conn, client), ADDRESS_LIMIT, "address"),
            (f"space:{site}/{space}", SPACE_LIMIT, "space"),
        ],
        now,
    )
    clauses = offered[category]
    row = conn.execute(
        "INSERT INTO feedback_items (site, space, category, clauses, body, lang, received_at,"
        " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (site, space, category, clauses, body, lang, now, now),
    ).fetchone()
    assert row is not None
    item_id = int(row[0])
    photo_digest = None
    if photo and content_type:
        photo_digest = hashlib.sha256(photo).hexdigest()
        conn.execute(
            "INSERT INTO feedback_photos (item_id, content_type, size, sha256, data)"
            " VALUES (%s, %s, %s, %s, %s)",
            (item_id, content_type, len(photo), photo_digest, photo),
        )
    ledger.append(
        conn,
        [
            ledger.Entry(
                "feedback.received",
                f"feedback:{item_id}",
                {
                    "site": site,
                    "space": space,
                    "category": category,
                    "clauses": clauses,
                    "text_sha256": hashlib.sha256(body.encode()).hexdigest(),
                    "photo_sha256": photo_digest,
                },
            )
        ],
        now,
    )
    return item_id


# ---- triage ----


def feedback_site(conn: psycopg.Connection[Any], item_id: int) -> str | None:
    row = conn.execute("SELECT site FROM feedback_items WHERE id = %s", (item_id,)).fetchone()
    return None if row is None else str(row[0])


def list_feedback(
    conn: psycopg.Connection[Any],
    sites: list[str] | None,
    *,
    state: str | None = None,
    category: str | None = None,
    space: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    item_id: int | None = None,
    limit: int = 200,
) -> list[FeedbackItem]:
    """Items of `sites` (None: all) received in [since, until) when given, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT i.id, i.site, i.space, i.category, i.clauses, i.body AS text, i.lang,"
            " i.state, i.received_at, i.triaged_at, p.content_type AS photo"
            " FROM feedback_items i LEFT JOIN feedback_photos p ON p.item_id = i.id"
            " WHERE (%(sites)s::text[] IS NULL OR i.site = ANY(%(sites)s))"
            " AND (%(state)s::text IS NULL OR i.state = %(state)s)"
            " AND (%(category)s::text IS NULL OR i.category = %(category)s)"
            " AND (%(space)s::text IS NULL OR i.space = %(space)s)"
            " AND (%(since)s::timestamptz IS NULL OR i.received_at >= %(since)s)"
            " AND (%(until)s::timestamptz IS NULL OR i.received_at < %(until)s)"
            " AND (%(id)s::bigint IS NULL OR i.id = %(id)s)"
            " ORDER BY i.received_at DESC, i.id DESC LIMIT %(limit)s",
            {
                "sites": sites,
                "state": state,
                "category": category,
                "space": space,
                "since": since,
                "until": until,
                "id": item_id,
                "limit": limit,
            },
        ).fetchall()
        steps: dict[int, list[FeedbackStep]] = {row["id"]: [] for row in rows}
        for step in cur.execute(
            "SELECT item_id, state, actor, note, at FROM feedback_steps"
            " WHERE item_id = ANY(%s) ORDER BY at, state",
            (list(steps),),
        ):
            steps[step.pop("item_id")].append(FeedbackStep(**step))
    return [FeedbackItem(steps=steps[row["id"]], **row) for row in rows]


def triage(
    conn: psycopg.Connection[Any],
    item_id: int,
    state: str,
    note: str,
    actor: str,
    now: dt.datetime,
) -> FeedbackItem:
    """Moves an item one step (NEXT_STATES) with who and a note, and a ledger entry. Raises
    UnknownItem, StepNotAllowed. Does not commit."""
    row = conn.execute(
        "SELECT site, state FROM feedback_items WHERE id = %s FOR UPDATE", (item_id,)
    ).fetchone()
    if row is None:
        raise UnknownItem(item_id)
    site, current = str(row[0]), str(row[1])
    if state not in NEXT_STATES.get(current, frozenset()):
        allowed = ", ".join(sorted(NEXT_STATES.get(current, frozenset()))) or "none (closed)"
        raise StepNotAllowed(f"the item is {current}; next steps: {allowed}")
    conn.execute(
        "UPDATE feedback_items SET state = %s, triaged_at = coalesce(triaged_at, %s),"
        " updated_at = %s WHERE id = %s",
        (state, now, now, item_id),
    )
    conn.execute(
        "INSERT INTO feedback_steps (item_id, state, actor, note, at) VALUES (%s, %s, %s, %s, %s)",
        (item_id, state, actor, note, now),
    )
    ledger.append(
        conn,
        [
            ledger.Entry(
                f"feedback.{state}",
                f"feedback:{item_id}",
                {"site": site, "state": state, "note": note, "actor": actor},
            )
        ],
        now,
    )
    return list_feedback(conn, None, item_id=item_id)[0]


def feedback_photo(conn: psycopg.Connection[Any], item_id: int) -> tuple[str, bytes] | None:
    row = conn.execute(
        "SELECT content_type, data FROM feedback_photos WHERE item_id = %s", (item_id,)
    ).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]))


# ---- counts ----


def feedback_counts(
    conn: psycopg.Connection[Any],
    site: str,
    since: dt.datetime,
    until: dt.datetime,
    at: dt.datetime,
) -> FeedbackCounts:
    """Items received at `site` in [since, until) and by `at`, by category, by state as of
    `at`, by clause; time to triage over those with a first step by `at`."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT i.category, i.clauses, i.received_at,"
            " (SELECT min(s.at) FROM feedback_steps s WHERE s.item_id = i.id AND s.at <= %(at)s)"
            " AS first_step,"
            " (SELECT s.state FROM feedback_steps s WHERE s.item_id = i.id AND s.at <= %(at)s"
            " ORDER BY s.at DESC LIMIT 1) AS state"
            " FROM feedback_items i WHERE i.site = %(site)s AND i.received_at >= %(since)s"
            " AND i.received_at < %(until)s AND i.received_at <= %(at)s",
            {"site": site, "since": since, "until": until, "at": at},
        ).fetchall()
    by_category = dict.fromkeys(CATEGORIES, 0)
    by_state = dict.fromkeys(STATES, 0)
    by_clause: dict[str, int] = {}
    waits = []
    for row in rows:
        by_category[row["category"]] += 1
        by_state[row["state"] or "new"] += 1
        for clause_id in row["clauses"]:
            by_clause[clause_id] = by_clause.get(clause_id, 0) + 1
        if row["first_step"] is not None:
            waits.append((row["first_step"] - row["received_at"]).total_seconds())
    return FeedbackCounts(
        received=len(rows),
        by_category=by_category,
        by_state=by_state,
        by_clause=dict(sorted(by_clause.items(), key=lambda kv: (-kv[1], kv[0]))),
        triaged=len(waits),
        mean_time_to_triage_s=sum(waits) / len(waits) if waits else None,
    )

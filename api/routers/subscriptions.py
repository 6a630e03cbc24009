"""Per-user subscriptions and contact points (issue 20, alerts/subscriptions.py).

`/me` (the page) and `/api/v1/me/...`: a signed-in user's own (a session; an API token is no
user: 403). `/users/{name}/...`: an unscoped admin (`GlobalAdmin`) reads or sets a user's
contact points and reads or removes their subscriptions. Contact points are shown to no one else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status
from fastapi.responses import FileResponse

from alerts import routing, subscriptions
from api import STATIC_DIR, users
from api.auth import CurrentToken, GlobalAdmin, Principal
from api.deps import DbConn
from api.models import SubscriptionPublic, problems
from store.times import wall_now

router = APIRouter(tags=["subscriptions"])
pages = APIRouter(include_in_schema=False)
SubscriptionId = Annotated[int, Path(ge=1, le=2**63 - 1)]
UserName = Annotated[str, Path(pattern=users.USER_NAME.pattern)]


@pages.get("/me")
def me_page() -> FileResponse:
    """The signed-in user's own page: contact points and subscriptions (我的订阅)."""
    return FileResponse(STATIC_DIR / "me.html", media_type="text/html; charset=utf-8")


@router.get("/me/contacts", responses=problems(401, 403))
def my_contacts(conn: DbConn, principal: CurrentToken) -> subscriptions.Contacts:
    """Your own contact points (e-mail address, mobile number)."""
    return subscriptions.get_contacts(conn, _me(conn, principal).id)


@router.put("/me/contacts", responses=problems(401, 403))
def set_my_contacts(
    body: subscriptions.Contacts, conn: DbConn, principal: CurrentToken
) -> subscriptions.Contacts:
    """Replaces your contact points (null: none)."""
    user = _me(conn, principal)
    subscriptions.set_contacts(conn, user, body, principal.actor, wall_now())
    conn.commit()
    return subscriptions.get_contacts(conn, user.id)


@router.get("/me/subscriptions", responses=problems(401, 403))
def my_subscriptions(conn: DbConn, principal: CurrentToken) -> list[SubscriptionPublic]:
    """Your subscriptions."""
    user = _me(conn, principal)
    return [SubscriptionPublic(**r) for r in subscriptions.list_subscriptions(conn, user)]


@router.post(
    "/me/subscriptions", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 409)
)
def subscribe(
    body: subscriptions.SubscriptionSpec, conn: DbConn, principal: CurrentToken
) -> SubscriptionPublic:
    """Adds a subscription: the alerts it matches (within what you may see) reach your contact
    points. 403 for a site or org prefix outside your scope; 422 for a channel without a
    contact point or a target; 409 for a name you already used."""
    user = _me(conn, principal)
    try:
        new_id = subscriptions.add_subscription(
            conn, user, principal.sites, body, principal.actor, wall_now()
        )
    except subscriptions.OutOfScope as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except subscriptions.SubscriptionInvalid as exc:
        conn.rollback()
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}],
        ) from None
    except routing.RouteExists:
        conn.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"you have a subscription named {body.name!r}"
        ) from None
    conn.commit()
    rows = subscriptions.list_subscriptions(conn, user)
    return SubscriptionPublic(**next(r for r in rows if r["id"] == new_id))


@router.delete(
    "/me/subscriptions/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 403, 404),
)
def unsubscribe(subscription_id: SubscriptionId, conn: DbConn, principal: CurrentToken) -> Response:
    """Removes one of your subscriptions."""
    return _remove(conn, _me(conn, principal), subscription_id, principal)


@router.get("/users/{name}/contacts", responses=problems(401, 403, 404))
def user_contacts(name: UserName, conn: DbConn, principal: GlobalAdmin) -> subscriptions.Contacts:
    return subscriptions.get_contacts(conn, _user(conn, name).id)


@router.put("/users/{name}/contacts", responses=problems(401, 403, 404))
def set_user_contacts(
    name: UserName, body: subscriptions.Contacts, conn: DbConn, principal: GlobalAdmin
) -> subscriptions.Contacts:
    user = _user(conn, name)
    subscriptions.set_contacts(conn, user, body, principal.actor, wall_now())
    conn.commit()
    return subscriptions.get_contacts(conn, user.id)


@router.get("/users/{name}/subscriptions", responses=problems(401, 403, 404))
def user_subscriptions(
    name: UserName, conn: DbConn, principal: GlobalAdmin
) -> list[SubscriptionPublic]:
    user = _user(conn, name)
    return [SubscriptionPublic(**r) for r in subscriptions.list_subscriptions(conn, user)]


@router.delete(
    "/users/{name}/subscriptions/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 403, 404),
)
def remove_user_subscription(
    name: UserName, subscription_id: SubscriptionId, conn: DbConn, principal: GlobalAdmin
) -> Response:
    return _remove(conn, _user(conn, name), subscription_id, principal)


def _remove(
    conn: DbConn, user: subscriptions.Subscriber, subscription_id: int, principal: Principal
) -> Response:
    try:
        subscriptions.remove_subscription(conn, user, subscription_id, principal.actor, wall_now())
    except LookupError:
        conn.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "subscription not found") from None
    conn.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _me(conn: DbConn, principal: Principal) -> subscriptions.Subscriber:
    if principal.user is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "subscriptions are a signed-in user's; a token has none"
        )
    return _user(conn, principal.user)


def _user(conn: DbConn, name: str) -> subscriptions.Subscriber:
    record = users.get_user(conn, name)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found")
    return subscriptions.Subscriber(
        id=record.id, name=record.name, sites=record.sites, org=record.org
    )

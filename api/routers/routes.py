"""Notification routing policies (issue 20, alerts/routing.py): list, add, replace, remove.

Admin tokens only (`registry:write`). A route for every site (no `sites`), and the default route,
are global data: an unscoped admin's. A site-scoped admin sees and edits only the routes whose
`sites` are all its own, and its routes must name some of its sites (403 otherwise; a route of
another site by id is 404, as if it did not exist). Every change is a ledger entry.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from alerts import routing
from api.auth import Principal, RegistryAdmin
from api.deps import DbConn
from api.models import RoutePublic, SiteId, problems
from store.times import wall_now

router = APIRouter(tags=["notification routes"])
RouteId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/notification-routes", responses=problems(401, 403))
def list_routes(
    conn: DbConn,
    principal: RegistryAdmin,
    site: Annotated[SiteId | None, Query(description="only routes that name this site")] = None,
) -> list[RoutePublic]:
    """The routes in the order they are tried (a scoped token: those for its sites only)."""
    sites = principal.site_filter(site)
    rows = routing.route_rows(conn, principal.sites)
    if sites is not None:
        rows = [r for r in rows if set(r["sites"]) & set(sites)]
    return [RoutePublic(**row) for row in rows]


@router.post(
    "/notification-routes",
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 403, 409),
)
def create_route(body: routing.RouteSpec, conn: DbConn, principal: RegistryAdmin) -> RoutePublic:
    """Adds a route (without `position`: after every route). 409 when the name is taken or a
    default route exists; 422 for unknown sites or receivers."""
    _may_own(principal, body)
    try:
        route_id = routing.add_route(conn, body, principal.actor, wall_now())
    except routing.RouteInvalid as exc:
        conn.rollback()
        raise _field_error(exc.field, str(exc)) from None
    except routing.RouteExists as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    conn.commit()
    return _route(conn, principal, route_id)


@router.put("/notification-routes/{route_id}", responses=problems(401, 403, 404, 409))
def replace_route(
    route_id: RouteId, body: routing.RouteSpec, conn: DbConn, principal: RegistryAdmin
) -> RoutePublic:
    """Replaces a route (without `position` it keeps its place)."""
    _route(conn, principal, route_id)
    _may_own(principal, body)
    try:
        routing.change_route(conn, route_id, body, principal.actor, wall_now())
    except routing.RouteInvalid as exc:
        conn.rollback()
        raise _field_error(exc.field, str(exc)) from None
    except routing.RouteExists as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except LookupError:
        conn.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "route not found") from None
    conn.commit()
    return _route(conn, principal, route_id)


@router.delete(
    "/notification-routes/{route_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 403, 404),
)
def delete_route(route_id: RouteId, conn: DbConn, principal: RegistryAdmin) -> Response:
    """Removes a route; notifications keep the name of the route that chose them."""
    _route(conn, principal, route_id)
    try:
        routing.remove_route(conn, route_id, principal.actor, wall_now())
    except LookupError:
        conn.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "route not found") from None
    conn.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _may_own(principal: Principal, spec: routing.RouteSpec) -> None:
    """A scoped admin's route names some of its sites and no other."""
    if principal.sites is None:
        return
    if not spec.sites or spec.default:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "a route for every site (or the default route) needs a token without a site scope",
        )
    if not set(spec.sites) <= principal.sites:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token cannot act on those sites")


def _route(conn: DbConn, principal: Principal, route_id: int) -> RoutePublic:
    rows = routing.route_rows(conn, principal.sites, route_id=route_id)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "route not found")
    return RoutePublic(**rows[0])


def _field_error(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )

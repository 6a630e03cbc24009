"""`GET /ledger/verify`: recompute the hash chain and name the first entry that does not fit."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import LedgerVerifier
from api.deps import DbConn
from api.models import LedgerVerdict, problems
from store import ledger

router = APIRouter(prefix="/ledger", tags=["ledger"])


@router.get("/verify", responses=problems(401, 403))
def verify_ledger(conn: DbConn, principal: LedgerVerifier) -> LedgerVerdict:
    """The ledger spans every site, so only tokens without a site scope may verify it."""
    verdict = ledger.verify(conn)
    return LedgerVerdict(
        ok=verdict.ok,
        checked=verdict.checked,
        first_bad_seq=verdict.first_bad_seq,
        problem=verdict.problem,
        tip_seq=verdict.tip_seq,
        tip_hash=verdict.tip_hash,
    )

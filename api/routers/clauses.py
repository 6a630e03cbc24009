"""Clauses and their version history (clause_versions), and validation of a clause file before
anyone deploys it. Clauses are not site data: every reader sees them."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path as FilePath
from typing import Annotated

import yaml
from fastapi import APIRouter, HTTPException, Path, status

from api.auth import ClauseAdmin, Reader
from api.deps import DbConn
from api.models import (
    ClauseFileText,
    ClausePublic,
    ClauseValidation,
    ClauseVersionPublic,
    FieldError,
    Standard,
    ValidatedClause,
    problems,
)
from config.documents import ConfigError
from config.files import load_clause_file
from store import registry

router = APIRouter(prefix="/clauses", tags=["clauses"])
# Far above any real clause file (a few thousand nodes), far below what hurts the server.
MAX_EXPANDED_NODES = 200_000
ClauseId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.-]*$", max_length=128)]


@router.get("", responses=problems(401, 403))
def list_clauses(conn: DbConn, principal: Reader) -> list[ClausePublic]:
    """Every clause with its latest version's provenance, and whether a version is in force
    today (UTC date)."""
    rows = registry.latest_clause_versions(conn, dt.datetime.now(dt.UTC).date())
    return [
        ClausePublic(
            id=row["clause_id"],
            latest_version=row["version"],
            versions=row["versions"],
            standard=Standard(
                code=row["standard_code"],
                title=row["standard_title"],
                edition=row["standard_edition"],
            ),
            number=row["number"],
            title=row["title"],
            domain=row["domain"],
            key=row["key"],
            severity=row["severity"],
            confidence=row["confidence"],
            in_force_today=row["in_force"],
        )
        for row in rows
    ]


@router.get("/{clause_id}/versions", responses=problems(401, 403, 404))
def clause_versions(
    clause_id: ClauseId, conn: DbConn, principal: Reader
) -> list[ClauseVersionPublic]:
    """Every version of one clause, oldest first."""
    rows = registry.clause_version_rows(conn, clause_id)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "clause not found")
    return [ClauseVersionPublic(**row) for row in rows]


@router.post("/validate", responses=problems(401, 403))
def validate_clause_file(body: ClauseFileText, principal: ClauseAdmin) -> ClauseValidation:
    """Validates a clause file (YAML text) exactly as `clausewatch check` does, without storing
    it. The answer is 200 either way; `errors` lists each problem with its path inside the
    document and its line."""
    problem = pre_parse(body.yaml)
    if problem is not None:
        return _invalid([problem])
    with tempfile.TemporaryDirectory(prefix="cw-validate-") as folder:
        path = FilePath(folder) / "clauses.yaml"
        path.write_text(body.yaml, encoding="utf-8")
        try:
            parsed = load_clause_file(path)
        except ConfigError as exc:
            return _invalid(
                [FieldError(path=p.where, message=p.message, line=p.line) for p in exc.problems]
            )
        except RecursionError:
            return _invalid(
                [FieldError(path="", message="the document nests too deeply", line=None)]
            )
    return ClauseValidation(
        valid=True,
        errors=[],
        clauses=[
            ValidatedClause(id=c.id, version=c.version, content_hash=c.content_hash())
            for c in parsed.clauses
        ],
    )


def _invalid(errors: list[FieldError]) -> ClauseValidation:
    return ClauseValidation(valid=False, errors=errors, clauses=[])


def pre_parse(text: str) -> FieldError | None:
    """A YAML syntax error (with its line), or a document that expands through aliases into
    more than MAX_EXPANDED_NODES nodes (an alias bomb: small text, huge document), found on
    the node graph without expanding it. None when the text may go to the clause loader."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        return FieldError(
            path="", message=f"YAML syntax: {message}", line=mark.line + 1 if mark else None
        )
    except yaml.YAMLError as exc:  # reader errors: control characters, bad encoding
        return FieldError(path="", message=f"YAML: {exc}", line=None)
    except RecursionError:
        return FieldError(path="", message="the document nests too deeply", line=None)
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        sizes[id(node)] = total
        return total

    try:
        nodes = 0 if root is None else size(root)
    except RecursionError:
        nodes = MAX_EXPANDED_NODES + 1
    if nodes > MAX_EXPANDED_NODES:
        message = f"the document expands (through aliases) to more than {MAX_EXPANDED_NODES} nodes"
        return FieldError(path="", message=message, line=None)
    return None

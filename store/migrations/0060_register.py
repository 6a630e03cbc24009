"""The standards register and period evaluation reports (issue 10).

- `cw_clause_document(...)`: the text the register searches (standard code and title, clause id,
  number, title, text, domain), lower-cased. An IMMUTABLE function so the trigram index and the
  queries use one expression.
- A trigram GIN index on it when `pg_trgm` can be created (a trusted extension since PostgreSQL
  13; CJK text yields trigrams in a UTF-8 database). Without the extension the register still
  finds everything with ILIKE, only by a sequential scan.
- `evaluation_reports`: each generated self-evaluation report, its figures, HTML and CSV, and the
  clauses it evaluated (what the evaluated share counts).
"""

from __future__ import annotations

from typing import Any

import psycopg

DOCUMENT_FUNCTION = """
CREATE FUNCTION cw_clause_document(
    clause_id text, standard_code text, standard_title text, number text, title text,
    body text, domain text
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(clause_id || ' ' || standard_code || ' ' || standard_title || ' ' || number
                 || ' ' || title || ' ' || body || ' ' || domain)
$$;
"""

TRIGRAM_INDEX = """
CREATE INDEX clause_versions_document_trgm ON clause_versions USING gin (
    cw_clause_document(clause_id, standard_code, standard_title, number, title, text, domain)
    gin_trgm_ops
);
"""

REPORTS = """
CREATE TABLE evaluation_reports (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site          text NOT NULL REFERENCES sites (id),
    period        text NOT NULL,             -- '2026Q3'
    period_start  timestamptz NOT NULL,      -- local midnight of the quarter's first day
    period_end    timestamptz NOT NULL,      -- exclusive
    clauses       text[] NOT NULL,           -- the clauses in force it evaluated
    figures       jsonb NOT NULL,            -- compliance.reports.EvaluationReport
    html          text NOT NULL,
    csv           text NOT NULL,
    generated_by  text NOT NULL,
    generated_at  timestamptz NOT NULL,
    CHECK (period_end > period_start)
);
-- A report may be produced again (a correction); every one is kept, the newest is current.
CREATE INDEX evaluation_reports_site_period ON evaluation_reports (site, period_start, id DESC);
"""


def upgrade(conn: psycopg.Connection[Any]) -> None:
    conn.execute(DOCUMENT_FUNCTION)
    conn.execute(REPORTS)
    if _has_trigrams(conn):
        conn.execute(TRIGRAM_INDEX)


def _has_trigrams(conn: psycopg.Connection[Any]) -> bool:
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'"
    ).fetchone()
    if available is None:
        return False
    try:
        with conn.transaction():  # a savepoint: a refusal must not abort the migration
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except psycopg.Error:
        # Not permitted, or packaged without its library: search works without the index.
        return False
    return True

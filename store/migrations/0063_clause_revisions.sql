-- Clause revisions (issue 21): a change to a clause proposed, validated and backtested, approved
-- by someone other than its proposer, published with an effective date, and rolled back. The
-- versions a revision publishes are ordinary rows of clause_versions; this table says who
-- proposed, approved, published and rolled back what, and which versions it manages (the
-- service judges those rows rather than the files' text of them).
CREATE TABLE clause_revisions (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clause_id          text NOT NULL,
    based_on           integer NOT NULL,          -- the version revised (the newest when proposed)
    state              text NOT NULL CHECK (state IN
                           ('pending', 'approved', 'rejected', 'published', 'rolled_back')),
    changes            jsonb NOT NULL,            -- {dotted path: new value}, as proposed
    diff               jsonb NOT NULL,            -- [{path, before, after}] against based_on
    config             jsonb NOT NULL,            -- the new version as validated
    reason             text NOT NULL,
    backtest           jsonb NOT NULL,            -- per site: the candidate beside the version in force
    proposed_by        text NOT NULL,
    proposed_at        timestamptz NOT NULL,
    approved_by        text,
    approved_at        timestamptz,
    decision_note      text,                      -- the approver's note, or why it was rejected
    rejected_by        text,
    rejected_at        timestamptz,
    published_by       text,
    published_at       timestamptz,
    version            integer,                   -- the version number it published
    effective_from     date,
    previous_config    jsonb,                     -- based_on before publishing closed it
    rolled_back_by     text,
    rolled_back_at     timestamptz,
    rollback_version   integer,                   -- the version restoring based_on's content
    rollback_from      date,                      -- null: withdrawn before it came into force
    updated_at         timestamptz NOT NULL,
    CHECK (approved_by IS NULL OR approved_by <> proposed_by),
    CHECK ((state = 'published') <= (version IS NOT NULL AND effective_from IS NOT NULL))
);
-- At most one open revision (pending or approved) of a clause at a time.
CREATE UNIQUE INDEX clause_revisions_open ON clause_revisions (clause_id)
    WHERE state IN ('pending', 'approved');
CREATE INDEX clause_revisions_clause ON clause_revisions (clause_id, id);

-- Overdue improvement actions escalate (限期整改, issue 21): `overdue_step` counts the steps
-- taken past the deadline (0: none; 1: the owner told; n: level n-1 of the site's escalation
-- chain told), written in the transaction that queues the step's notifications, so a restart
-- never sends a step twice.
ALTER TABLE improvement_actions
    ADD COLUMN overdue_step integer NOT NULL DEFAULT 0 CHECK (overdue_step >= 0);
CREATE INDEX improvement_actions_overdue ON improvement_actions (deadline)
    WHERE state = 'open';
ALTER TABLE notifications
    ADD CONSTRAINT notifications_action_fkey
    FOREIGN KEY (action_id) REFERENCES improvement_actions (id);

-- Site revisions (issue 21): a change of a site's model (a workbook imported as a proposal)
-- approved by a named user other than its proposer, published with an effective time, applied
-- at that time (the site's file written and the registry synced, which the running engines
-- pick up as they do any synced site), and rolled back. compliance/site_revisions.py.
CREATE TABLE site_revisions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site            text NOT NULL,             -- a new site is not in `sites` until applied
    state           text NOT NULL CHECK (state IN
                        ('pending', 'approved', 'rejected', 'published', 'applied',
                         'failed', 'rolled_back')),
    source          text NOT NULL,             -- the workbook's file name
    model           jsonb NOT NULL,            -- the proposed site model
    based_on        jsonb,                     -- the model configured when proposed (null: new)
    diff            jsonb NOT NULL,            -- what the dry run showed: kinds and lines
    reason          text NOT NULL,
    proposed_by     text NOT NULL,
    proposed_at     timestamptz NOT NULL,
    approved_by     text,
    approved_at     timestamptz,
    decision_note   text,
    rejected_by     text,
    rejected_at     timestamptz,
    published_by    text,
    published_at    timestamptz,
    effective_at    timestamptz,
    applied_at      timestamptz,
    failure         text,                      -- why the directory refused it when due
    previous        jsonb,                     -- the model it replaced when applied
    rolled_back_by  text,
    rolled_back_at  timestamptz,
    updated_at      timestamptz NOT NULL,
    CHECK (approved_by IS NULL OR approved_by <> proposed_by),
    CHECK ((state IN ('published', 'applied')) <= (effective_at IS NOT NULL))
);
-- At most one open revision (pending, approved or published, not yet applied) of a site.
CREATE UNIQUE INDEX site_revisions_open ON site_revisions (site)
    WHERE state IN ('pending', 'approved', 'published');
CREATE INDEX site_revisions_due ON site_revisions (effective_at) WHERE state = 'published';

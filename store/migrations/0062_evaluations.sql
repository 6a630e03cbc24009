-- Implementation evaluations a person completes for a clause at a site (issue 21): what the
-- evaluated share counts (generated quarterly reports no longer do), and the improvement
-- actions each one sets, tracked to closure (限期整改).
CREATE TABLE evaluations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site          text NOT NULL REFERENCES sites (id),
    clause_id     text NOT NULL,
    period        text NOT NULL,             -- the quarter evaluated, '2026Q3'
    period_start  timestamptz NOT NULL,      -- local midnight of the quarter's first day
    period_end    timestamptz NOT NULL,      -- exclusive
    method        text NOT NULL,             -- inspection, records, survey, measurement, ...
    findings      text NOT NULL,
    satisfaction  smallint NOT NULL CHECK (satisfaction BETWEEN 1 AND 5),
    evaluated_by  text NOT NULL,             -- the principal's actor: a person's token
    evaluated_at  timestamptz NOT NULL,
    CHECK (period_end > period_start)
);
CREATE INDEX evaluations_site_period ON evaluations (site, period_start, period_end);

CREATE TABLE improvement_actions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    evaluation_id  bigint NOT NULL REFERENCES evaluations (id),
    site           text NOT NULL REFERENCES sites (id),
    action         text NOT NULL,
    owner          text NOT NULL,            -- who must carry it out (a name or party id)
    deadline       timestamptz NOT NULL,     -- 限期: overdue while open past it
    state          text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'done')),
    done_by        text,
    done_at        timestamptz,
    note           text,
    updated_by     text NOT NULL,
    updated_at     timestamptz NOT NULL,
    CHECK ((state = 'done') = (done_at IS NOT NULL AND done_by IS NOT NULL))
);
CREATE INDEX improvement_actions_site_open ON improvement_actions (site, deadline)
    WHERE state = 'open';
CREATE INDEX improvement_actions_evaluation ON improvement_actions (evaluation_id);

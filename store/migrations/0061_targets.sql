-- Targets of the plan per organisation node (issue 21): the path of a node of the site model's
-- `org` tree (city, district, unit) joined with '/', '' for every site. A node without a row
-- of its own takes its nearest ancestor's, and with none the plan's defaults (compliance rate
-- 90 %, key-clause coverage 95 %, evaluated share 30 %: compliance/targets.py).
CREATE TABLE org_targets (
    path                 text PRIMARY KEY
                         CHECK (path = '' OR path ~ '^[a-z0-9][a-z0-9_-]{0,63}(/[a-z0-9][a-z0-9_-]{0,63})*$'),
    compliance_rate      double precision NOT NULL CHECK (compliance_rate BETWEEN 0 AND 1),
    key_clause_coverage  double precision NOT NULL CHECK (key_clause_coverage BETWEEN 0 AND 1),
    evaluated_share      double precision NOT NULL CHECK (evaluated_share BETWEEN 0 AND 1),
    set_by               text NOT NULL,
    set_at               timestamptz NOT NULL
);

-- Silences and maintenance windows (issue 20). One table, two kinds with one shape: a scope at
-- one site (the whole site, a space and its subtree, a device, or a clause) over [starts_at,
-- ends_at), with the reason and who set it.
--   silence:     notifications of the alerts it covers are held back (alerts are still recorded);
--   maintenance: planned works: the compliance time it covers is exempt (in no rate, reported
--                as exempt time).
-- Rows are never deleted and never edited, except once: cancelling sets cancelled_at (and by);
-- `effective_end` is then the earlier of the two. Expiry needs no job: readers compare with now.
CREATE TABLE quiet_periods (
    id             bigserial PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('silence', 'maintenance')),
    site           text NOT NULL REFERENCES sites (id),
    scope          text NOT NULL CHECK (scope IN ('site', 'space', 'device', 'clause')),
    target         text,                -- the space, device or clause id; NULL for 'site'
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    reason         text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    retroactive    boolean NOT NULL DEFAULT false,  -- declared after it had begun (admins only)
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL,
    cancelled_at   timestamptz,
    cancelled_by   text,
    effective_end  timestamptz GENERATED ALWAYS AS (least(ends_at, cancelled_at)) STORED,
    CHECK (ends_at > starts_at),
    CHECK ((scope = 'site') = (target IS NULL)),
    CHECK ((cancelled_at IS NULL) = (cancelled_by IS NULL))
);
CREATE INDEX quiet_periods_site ON quiet_periods (site, kind, effective_end);

CREATE FUNCTION cw_quiet_periods_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'silences and maintenance windows are history: cancel instead of deleting';
    END IF;
    IF OLD.cancelled_at IS NOT NULL
       OR (NEW.kind, NEW.site, NEW.scope, NEW.target, NEW.starts_at, NEW.ends_at, NEW.reason,
           NEW.retroactive, NEW.created_by, NEW.created_at)
          IS DISTINCT FROM
          (OLD.kind, OLD.site, OLD.scope, OLD.target, OLD.starts_at, OLD.ends_at, OLD.reason,
           OLD.retroactive, OLD.created_by, OLD.created_at) THEN
        RAISE EXCEPTION 'a silence or maintenance window is only ever cancelled, once';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER quiet_periods_guard BEFORE UPDATE OR DELETE ON quiet_periods
    FOR EACH ROW EXECUTE FUNCTION cw_quiet_periods_guard();

-- A space and its ancestors (itself first): a space-scoped period covers its subtree.
CREATE FUNCTION cw_space_lineage(p_site text, p_space text) RETURNS text[]
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE up (id, parent, depth) AS (
        SELECT id, parent, 0 FROM spaces WHERE site = p_site AND id = p_space
        UNION ALL
        SELECT s.id, s.parent, up.depth + 1 FROM spaces s JOIN up ON s.site = p_site
            AND s.id = up.parent WHERE up.depth < 64
    )
    SELECT coalesce((SELECT array_agg(id ORDER BY depth) FROM up), ARRAY[p_space])
$$;

-- Whether a period covers a subject (site, space, device or '' / NULL, clause).
CREATE FUNCTION cw_quiet_covers(q quiet_periods, p_site text, p_space text, p_device text,
                                p_clause text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT q.site = p_site AND CASE q.scope
        WHEN 'site' THEN true
        WHEN 'space' THEN q.target = ANY (cw_space_lineage(p_site, p_space))
        WHEN 'device' THEN q.target = coalesce(p_device, '')
        ELSE q.target = p_clause
    END
$$;

-- A notification a silence held back: kept, with the silence that held it.
ALTER TABLE notifications DROP CONSTRAINT notifications_state_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_state_check
    CHECK (state IN ('pending', 'delivered', 'failed', 'silenced'));
ALTER TABLE notifications ADD COLUMN silence_id bigint REFERENCES quiet_periods (id);

-- Registry, clause versions, alerts with their timeline, notifications and the hash-chained
-- ledger (issue 5). Rows that are history are never rewritten: assignments only ever get their
-- period closed, the ledger only ever grows (both enforced by triggers below).

CREATE TABLE sites (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    timezone      text NOT NULL,
    info          jsonb NOT NULL,          -- the site section of the site model, as written
    model         jsonb NOT NULL,          -- the whole site model last synced from its file
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_by    text NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- Spaces, devices and parties are retired, never deleted: alerts and assignments name them.
CREATE TABLE spaces (
    site          text NOT NULL REFERENCES sites (id),
    id            text NOT NULL,
    name          text NOT NULL DEFAULT '',
    type          text NOT NULL,
    parent        text,
    tags          text[] NOT NULL DEFAULT '{}',
    area_m2       double precision,
    occupants     integer,
    retired_at    timestamptz,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_by    text NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (site, id)
);

CREATE TABLE devices (
    site          text NOT NULL REFERENCES sites (id),
    id            text NOT NULL,
    space         text NOT NULL,
    kind          text NOT NULL,
    metrics       jsonb NOT NULL,
    parent        text,
    retired_at    timestamptz,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_by    text NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (site, id)
);
CREATE INDEX devices_space ON devices (site, space);

CREATE TABLE parties (
    site          text NOT NULL REFERENCES sites (id),
    id            text NOT NULL,
    name          text NOT NULL,
    kind          text NOT NULL,
    contacts      jsonb NOT NULL DEFAULT '{}',
    retired_at    timestamptz,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_by    text NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (site, id)
);

-- A party answers for a space subtree and a clause domain ('*' = all) over [valid_from,
-- valid_to). An edit closes the old period and inserts a new row, so who was responsible on
-- any past date stays answerable.
CREATE TABLE assignments (
    id            bigserial PRIMARY KEY,
    site          text NOT NULL REFERENCES sites (id),
    party         text NOT NULL,
    space         text NOT NULL,
    domain        text NOT NULL DEFAULT '*',
    role          text NOT NULL CHECK (role IN ('responsible', 'escalation')),
    level         integer NOT NULL DEFAULT 0 CHECK (level >= 0),
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    ended_by      text,
    ended_at      timestamptz,
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX assignments_site_space ON assignments (site, space, level);

CREATE FUNCTION cw_assignments_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'assignments are history: close the period (valid_to) instead of deleting';
    END IF;
    IF (NEW.site, NEW.party, NEW.space, NEW.domain, NEW.role, NEW.level, NEW.valid_from,
        NEW.created_by, NEW.created_at)
       IS DISTINCT FROM
       (OLD.site, OLD.party, OLD.space, OLD.domain, OLD.role, OLD.level, OLD.valid_from,
        OLD.created_by, OLD.created_at) THEN
        RAISE EXCEPTION 'assignments are never edited in place: close this one and add a new one';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER assignments_immutable BEFORE UPDATE OR DELETE ON assignments
    FOR EACH ROW EXECUTE FUNCTION cw_assignments_immutable();

-- One row per clause version; `config` is the full version as validated, `content_hash` its
-- SHA-256 (rules.clause.ClauseVersion.content_hash).
CREATE TABLE clause_versions (
    clause_id         text NOT NULL,
    version           integer NOT NULL,
    content_hash      text NOT NULL,
    standard_code     text NOT NULL,
    standard_title    text NOT NULL,
    standard_edition  text NOT NULL,
    number            text NOT NULL,
    title             text NOT NULL,
    text              text NOT NULL DEFAULT '',
    domain            text NOT NULL,
    key               boolean NOT NULL DEFAULT false,
    confidence        text NOT NULL,
    severity          text NOT NULL,
    effective_from    date NOT NULL,
    effective_to      date,
    config            jsonb NOT NULL,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_by        text NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (clause_id, version)
);

CREATE TABLE alerts (
    id                 bigserial PRIMARY KEY,
    site               text NOT NULL,
    clause_id          text NOT NULL,
    clause_version     integer NOT NULL,
    content_hash       text NOT NULL,
    standard           text NOT NULL,
    number             text NOT NULL,
    title              text NOT NULL,
    domain             text NOT NULL,
    key                boolean NOT NULL DEFAULT false,
    kind               text NOT NULL CHECK (kind IN ('violation', 'warning', 'data_quality')),
    severity           text NOT NULL,
    space              text NOT NULL,
    device             text,
    metric             text,
    reason             text NOT NULL DEFAULT '',
    state              text NOT NULL
                       CHECK (state IN ('firing', 'acknowledged', 'resolved', 'closed')),
    started_at         timestamptz NOT NULL,
    confirmed_at       timestamptz NOT NULL,
    ended_at           timestamptz,
    worst_value        double precision,
    unit               text,
    params             jsonb NOT NULL DEFAULT '{}',
    evidence           jsonb NOT NULL DEFAULT '[]',
    responsible_party  text,
    responsible_name   text,
    escalation_level   integer NOT NULL DEFAULT 0,
    escalation_chain   jsonb NOT NULL DEFAULT '[]',
    unbound            boolean NOT NULL DEFAULT false,
    acknowledged_at    timestamptz,
    acknowledged_by    text,
    acknowledged_note  text,
    closed_at          timestamptz,
    closed_by          text,
    cause              text,
    corrective_action  text,
    reopen_count       integer NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX alerts_site_state ON alerts (site, state, id DESC);
CREATE INDEX alerts_started_at ON alerts (started_at DESC);
CREATE INDEX alerts_clause ON alerts (clause_id, started_at DESC);
-- The subject of an alert: finding the previous alert of a clause and subject (reopen, end).
CREATE INDEX alerts_subject ON alerts
    (site, clause_id, clause_version, space, (coalesce(device, '')), kind, id DESC);
-- Escalation scans only alerts nobody has acknowledged yet.
CREATE INDEX alerts_unacknowledged ON alerts (confirmed_at)
    WHERE state = 'firing' AND acknowledged_at IS NULL;

-- Every step of every alert. `id` is the SSE event id of the live stream.
CREATE TABLE alert_timeline (
    id        bigserial PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id),
    site      text NOT NULL,
    at        timestamptz NOT NULL,
    action    text NOT NULL CHECK (action IN ('raised', 'escalated', 'acknowledged', 'resolved',
                                              'reopened', 'closed', 'notified',
                                              'corrected')),  -- 'corrected': see 0014
    actor     text NOT NULL,
    note      text,
    data      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_timeline_alert ON alert_timeline (alert_id, id);
CREATE INDEX alert_timeline_site ON alert_timeline (site, id);

-- Listeners (the API's live stream) wake on this and read the new rows by id.
CREATE FUNCTION cw_alert_timeline_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cw_alerts', json_build_object(
        'id', NEW.id, 'alert_id', NEW.alert_id, 'site', NEW.site, 'action', NEW.action)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER alert_timeline_notify AFTER INSERT ON alert_timeline
    FOR EACH ROW EXECUTE FUNCTION cw_alert_timeline_notify();

-- Where notifications go: per site (NULL = every site) and escalation level (NULL = every
-- level). SMS, e-mail and chat gateways plug in as webhook receivers.
CREATE TABLE webhook_targets (
    id          bigserial PRIMARY KEY,
    site        text,
    level       integer,
    url         text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL
);

-- One message to one target. `failed` rows stay: a notification that never got through is
-- visible, not lost.
CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    alert_id         bigint NOT NULL REFERENCES alerts (id),
    site             text NOT NULL,
    target_id        bigint NOT NULL REFERENCES webhook_targets (id),
    url              text NOT NULL,
    event            text NOT NULL,
    level            integer NOT NULL,
    party            text,
    payload          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_alert ON notifications (alert_id);

CREATE TABLE notification_attempts (
    id               bigserial PRIMARY KEY,
    notification_id  bigint NOT NULL REFERENCES notifications (id),
    at               timestamptz NOT NULL,
    status           integer,          -- HTTP status, NULL when no response came back
    error            text,             -- NULL on success
    duration_ms      double precision NOT NULL
);
CREATE INDEX notification_attempts_notification ON notification_attempts (notification_id, id);

-- The hash chain. `payload` is canonical JSON kept as text, byte for byte what was hashed;
-- hash = sha256(prev_hash, seq, at, kind, entity, payload) (clausewatch/alerts/ledger.py).
CREATE TABLE ledger (
    seq        bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    kind       text NOT NULL,
    entity     text NOT NULL,
    payload    text NOT NULL,
    prev_hash  text NOT NULL,
    hash       text NOT NULL
);
CREATE INDEX ledger_entity ON ledger (entity, seq);

CREATE FUNCTION cw_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION cw_ledger_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION cw_ledger_append_only();

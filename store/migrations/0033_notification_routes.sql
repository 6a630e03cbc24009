-- Routing policies (issue 20, alerts/routing.py), in the spirit of Alertmanager's routes: an
-- ordered list of routes, each matching alerts by organisation, site, space subtree, clause
-- domain, severity and kind, naming receivers (webhook targets by name), and saying how its
-- notices are grouped (group_wait, group_interval), repeated (repeat_interval) and followed up
-- (send_resolved). The first matching route wins unless it says `continue`; the default route
-- serves alerts no other route matched.
-- `sites` is both a matcher and the route's owner: a site-scoped admin makes and sees only
-- routes for its own sites; a route for every site (empty `sites`) is an unscoped admin's.
-- `source`: 'file' (the config directory's routes.yaml, replaced at each start) or 'api'.
CREATE TABLE notification_routes (
    id                 bigserial PRIMARY KEY,
    name               text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    position           integer NOT NULL CHECK (position BETWEEN 0 AND 100000),
    is_default         boolean NOT NULL DEFAULT false,
    sites              text[] NOT NULL DEFAULT '{}',
    matchers           jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(matchers) = 'object'),
    receivers          text[] NOT NULL CHECK (cardinality(receivers) BETWEEN 1 AND 20),
    continue_matching  boolean NOT NULL DEFAULT false,
    group_wait_s       integer NOT NULL CHECK (group_wait_s BETWEEN 0 AND 3600),
    group_interval_s   integer NOT NULL CHECK (group_interval_s BETWEEN 0 AND 86400),
    repeat_interval_s  integer CHECK (repeat_interval_s BETWEEN 60 AND 604800),
    send_resolved      boolean NOT NULL DEFAULT true,
    source             text NOT NULL CHECK (source IN ('file', 'api')),
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_by         text NOT NULL,
    updated_at         timestamptz NOT NULL
);
-- One default route.
CREATE UNIQUE INDEX notification_routes_one_default ON notification_routes (is_default)
    WHERE is_default;

-- What a route decided for a notification, kept on it so that follow-ups and reminders need no
-- route (a route changed or removed later does not rewrite what was decided):
--   route:            the route that chose the receiver (NULL: no route; sent alone as before);
--   group_key:        site and clause: pending notices of one key to one target go as one message;
--   group_wait_s:     how long a new group waits for the rest of its notices;
--   group_interval_s: how long after a message of the group the next one may go;
--   repeat_interval_s: the route's reminder interval (NULL: the target's);
--   send_resolved:    whether resolved and closed notices follow;
--   sent_with:        the notification whose message carried this one (its attempts are the
--                     message's; NULL when it was the message itself or was sent alone).
ALTER TABLE notifications
    ADD COLUMN route text,
    ADD COLUMN group_key text,
    ADD COLUMN group_wait_s integer,
    ADD COLUMN group_interval_s integer,
    ADD COLUMN repeat_interval_s integer,
    ADD COLUMN send_resolved boolean NOT NULL DEFAULT true,
    ADD COLUMN sent_with bigint REFERENCES notifications (id);
CREATE INDEX notifications_group ON notifications (target_id, group_key, id)
    WHERE group_key IS NOT NULL;
CREATE INDEX notifications_group_pending ON notifications (target_id, group_key)
    WHERE group_key IS NOT NULL AND state = 'pending';

-- When a notice of a group to a target becomes due: with the group's pending message (not yet
-- tried) when there is one; else group_interval after the group's last message when that is
-- still ahead; else group_wait from now (a new group, or one quiet for group_interval). The last
-- message is that of the group's latest tried notice (itself, or the one it was sent with):
-- an index walk from the newest, not a scan of the group's history.
CREATE FUNCTION cw_group_due(p_target bigint, p_key text, p_now timestamptz,
                             p_wait_s integer, p_interval_s integer)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    pending timestamptz;
    message bigint;
    last_sent timestamptz;
BEGIN
    SELECT min(next_attempt_at) INTO pending FROM notifications
     WHERE target_id = p_target AND group_key = p_key AND state = 'pending' AND attempts = 0;
    IF pending IS NOT NULL THEN
        RETURN pending;
    END IF;
    SELECT coalesce(sent_with, id) INTO message FROM notifications
     WHERE target_id = p_target AND group_key = p_key AND attempts > 0
     ORDER BY id DESC LIMIT 1;
    SELECT max(at) INTO last_sent FROM notification_attempts WHERE notification_id = message;
    IF last_sent IS NOT NULL AND last_sent + make_interval(secs => p_interval_s) > p_now THEN
        RETURN last_sent + make_interval(secs => p_interval_s);
    END IF;
    RETURN p_now + make_interval(secs => p_wait_s);
END $$;

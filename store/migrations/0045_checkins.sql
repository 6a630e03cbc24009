-- Issue 19: field check-ins. A signed-in person records on a space's phone page that an
-- obligation's task was done (cleaned, inspected, maintained), optionally with a note and a
-- photo. The event itself goes through the pipeline into `events` like any other (reporter
-- `checkin`, rules/checkin.py); this row is what the person did, keyed by the page's event id
-- so a double tap or a retry is one check-in with one event time.
CREATE TABLE checkin_photos (
    id           uuid PRIMARY KEY,
    site         text COLLATE "C" NOT NULL,
    content_type text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    size         integer NOT NULL CHECK (size > 0 AND size <= 5242880),
    sha256       text NOT NULL,
    data         bytea NOT NULL,
    uploaded_by  text NOT NULL,
    uploaded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE checkins (
    event_id   uuid PRIMARY KEY,
    site       text COLLATE "C" NOT NULL,
    space      text COLLATE "C" NOT NULL,
    task       text NOT NULL,
    ts         timestamptz NOT NULL,
    actor      text NOT NULL,
    note       text NOT NULL DEFAULT '',
    photo      uuid REFERENCES checkin_photos (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkins_space ON checkins (site, space, task, ts);
-- The events of check-ins share one reporter, and events are keyed by (site, device, type, ts):
-- two check-ins of one task at one site never share an instant (the later one moves on by 1 ms).
CREATE UNIQUE INDEX checkins_instant ON checkins (site, task, ts);

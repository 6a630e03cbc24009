-- 信息反馈 (issue 21): what an occupant or a member of staff reports from a space's public page
-- (its QR code) without an account: a category the clauses covering the space offer, bounded
-- free text, an optional photo. Linked to the space and those clauses, triaged by the facility
-- manager (new → triaged → resolved / rejected, each step with who and a note), counted in the
-- statistics and the quarterly reports. No client address is stored with an item.
CREATE TABLE feedback_items (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL,
    space        text NOT NULL,
    category     text NOT NULL
                 CHECK (category IN ('too_cold', 'too_hot', 'not_cleaned', 'lift', 'other')),
    clauses      text[] NOT NULL,            -- the clauses in force covering the space for it
    body         text NOT NULL CHECK (length(body) <= 1000),
    lang         text NOT NULL CHECK (lang IN ('zh', 'en')),
    state        text NOT NULL DEFAULT 'new'
                 CHECK (state IN ('new', 'triaged', 'resolved', 'rejected')),
    received_at  timestamptz NOT NULL,
    triaged_at   timestamptz,                -- the first step out of 'new'
    updated_at   timestamptz NOT NULL,
    FOREIGN KEY (site, space) REFERENCES spaces (site, id),
    CHECK ((state = 'new') = (triaged_at IS NULL))
);
CREATE INDEX feedback_items_site_received ON feedback_items (site, received_at);
CREATE INDEX feedback_items_open ON feedback_items (site, state) WHERE state IN ('new', 'triaged');

-- Each step of an item's triage: who (the token's actor), when, the note.
CREATE TABLE feedback_steps (
    item_id  bigint NOT NULL REFERENCES feedback_items (id),
    state    text NOT NULL CHECK (state IN ('triaged', 'resolved', 'rejected')),
    actor    text NOT NULL,
    note     text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL
);
CREATE INDEX feedback_steps_item ON feedback_steps (item_id, at);

-- The optional photo, its type read from its bytes. Kept beside the check-in photos of issue 19
-- (checkin_photos) with the same columns, to be merged into one photo store.
CREATE TABLE feedback_photos (
    item_id       bigint PRIMARY KEY REFERENCES feedback_items (id),
    content_type  text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    size          integer NOT NULL CHECK (size > 0 AND size <= 5242880),
    sha256        text NOT NULL,
    data          bytea NOT NULL
);

-- The rate limit of the public form, shared by every process of the service: one row per
-- accepted submission and key (a client address or a space), kept for the window only. The
-- address is stored as an HMAC under `feedback_limit_key`, never as it came.
CREATE TABLE feedback_hits (
    key  text NOT NULL,
    at   timestamptz NOT NULL
);
CREATE INDEX feedback_hits_key_at ON feedback_hits (key, at);
CREATE INDEX feedback_hits_at ON feedback_hits (at);

CREATE TABLE feedback_limit_key (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    secret  text NOT NULL
);
INSERT INTO feedback_limit_key (secret)
    VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

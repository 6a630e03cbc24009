-- Named users, their sign-in sessions and failed sign-ins (issue 19). Tokens stay for machines;
-- people sign in at /login with a name and a password (argon2id; only the hash is stored).
-- A user sees the sites in `sites`, or every site whose organisation path (the site file's
-- `site.org`) starts with `org`, resolved at each request; both empty: every site.
CREATE TABLE IF NOT EXISTS users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    display_name  text NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 100),
    role          text NOT NULL
                  CHECK (role IN ('viewer', 'facility_manager', 'energy_officer', 'admin')),
    sites         text[] NOT NULL DEFAULT '{}',
    org           text[] NOT NULL DEFAULT '{}',
    password_hash text NOT NULL,
    password_set_at timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz,
    CONSTRAINT users_one_scope CHECK (cardinality(sites) = 0 OR cardinality(org) = 0)
);

-- A session is known by the SHA-256 of its cookie's value (the table leaks nothing usable), and
-- carries the SHA-256 of its CSRF token. It ends at `expires_at`, after `idle_timeout` without a
-- request, or when its user signs out (`ended_at`).
CREATE TABLE IF NOT EXISTS user_sessions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_hash  bytea NOT NULL UNIQUE CHECK (octet_length(session_hash) = 32),
    csrf_hash     bytea NOT NULL CHECK (octet_length(csrf_hash) = 32),
    user_id       bigint NOT NULL REFERENCES users (id),
    client        text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    idle_timeout  interval NOT NULL CHECK (idle_timeout > interval '0'),
    ended_at      timestamptz,
    CONSTRAINT user_sessions_expire_after_creation CHECK (expires_at > created_at)
);
CREATE INDEX IF NOT EXISTS user_sessions_live ON user_sessions (user_id) WHERE ended_at IS NULL;

-- Failed sign-ins, for the lockout (per user name and per client address over a window). Rows
-- older than the window are deleted as new ones come.
CREATE TABLE IF NOT EXISTS login_failures (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name  text NOT NULL,
    client     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS login_failures_user ON login_failures (user_name, at);
CREATE INDEX IF NOT EXISTS login_failures_client ON login_failures (client, at);

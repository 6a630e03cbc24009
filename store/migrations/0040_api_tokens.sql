-- Bearer tokens of the HTTP API (issue 6). Only the SHA-256 of a token is stored: a leaked
-- table does not leak usable tokens. An empty `sites` array means "every site".
CREATE TABLE IF NOT EXISTS api_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    role        text NOT NULL
                CHECK (role IN ('viewer', 'facility_manager', 'energy_officer', 'admin')),
    sites       text[] NOT NULL DEFAULT '{}',
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

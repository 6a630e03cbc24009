-- Where webhooks may go although the address is internal (issue 18, finding 3): an unscoped
-- admin's list of host names and networks. Everything else that is not a public address
-- (loopback, private, link-local, ...) is refused at send time, after DNS resolution.
CREATE TABLE webhook_allowlist (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('host', 'network')),
    entry       text NOT NULL UNIQUE,   -- a lower-case host name, or a network in CIDR form
    note        text NOT NULL DEFAULT '',
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL
);

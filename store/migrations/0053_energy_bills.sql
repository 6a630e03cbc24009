-- Utility bills and manual meter readings (issue 22): consumption of a carrier over a period of
-- local dates (both included) for a site, a space and a device when known, as billed by the
-- utility or typed by hand / estimated (`manual`). Rows are never changed in place except for
-- `current`: a correction is a new revision that replaces the current one (`replaces`), and the
-- ledger records both with the actor. '' in space / device: not given (the natural key needs a
-- value).
CREATE TABLE IF NOT EXISTS energy_bills (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text NOT NULL,
    carrier     text NOT NULL
                CHECK (carrier IN ('electricity', 'natural_gas', 'water', 'heat', 'gasoline',
                                   'diesel')),
    space       text NOT NULL DEFAULT '',
    device      text NOT NULL DEFAULT '',
    first_day   date NOT NULL,
    last_day    date NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('billed', 'manual')),
    quantity    numeric NOT NULL CHECK (quantity >= 0),   -- as written, in `unit`
    unit        text NOT NULL,
    amount      numeric NOT NULL CHECK (amount >= 0),     -- in the carrier's report unit
    cost        numeric CHECK (cost >= 0),                -- yuan (CNY), when the bill says
    reference   text NOT NULL DEFAULT '',                 -- bill or account number
    revision    integer NOT NULL CHECK (revision >= 1),
    replaces    bigint REFERENCES energy_bills (id),
    current     boolean NOT NULL DEFAULT true,
    source      text NOT NULL,                            -- file, sheet and row
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK (last_day >= first_day)
);
CREATE UNIQUE INDEX IF NOT EXISTS energy_bills_current_key
    ON energy_bills (site, carrier, space, device, first_day, last_day) WHERE current;
CREATE INDEX IF NOT EXISTS energy_bills_site_days
    ON energy_bills (site, first_day, last_day) WHERE current;

-- Tariffs for the operating cost (机关运行成本核算, issue 21): a price per report unit of a
-- carrier (yuan per kWh, m3 or GJ) valid over local dates, for one site, an organisation of the
-- site's org path, or a grid region. Electricity may be time-of-use: `bands` holds the day's
-- periods by local time ([{"band": "peak", "start": "08:00", "end": "11:00", "price": "1.1"}, ...],
-- covering the day once; energy/costs.py validates it). Rows are never changed in place: a new
-- price is a new row from its first day (the old one ends the day before, `last_day`).
CREATE TABLE IF NOT EXISTS energy_tariffs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope       text NOT NULL CHECK (scope IN ('site', 'org', 'region')),
    scope_id    text NOT NULL CHECK (scope_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    carrier     text NOT NULL CHECK (carrier IN ('electricity', 'natural_gas', 'water', 'heat')),
    first_day   date NOT NULL,
    last_day    date,                                   -- NULL: until further notice
    price       numeric CHECK (price >= 0),             -- a flat price, yuan per report unit
    bands       jsonb NOT NULL DEFAULT '[]',            -- time-of-use periods (electricity)
    source      text NOT NULL DEFAULT '',               -- the price notice it comes from
    added_by    text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (last_day IS NULL OR last_day >= first_day),
    CHECK ((price IS NULL) <> (bands = '[]'::jsonb))
);
CREATE INDEX IF NOT EXISTS energy_tariffs_scope ON energy_tariffs (scope, scope_id, carrier);

-- Energy and carbon accounting (issue 7): emission factors as data, green-power records and the
-- per-site choices a report needs. Factors are never updated in place: a correction is a new
-- row (another variant or data year), so an old report can always be recomputed as it was.
CREATE TABLE IF NOT EXISTS emission_factors (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    carrier     text NOT NULL
                CHECK (carrier IN ('electricity', 'natural_gas', 'heat', 'gasoline', 'diesel')),
    series      text NOT NULL CHECK (series ~ '^[a-z0-9][a-z0-9_.-]*$'),
    region      text NOT NULL CHECK (region ~ '^[a-z0-9][a-z0-9_-]*$'),
    data_year   integer NOT NULL CHECK (data_year BETWEEN 1990 AND 2100),
    value       numeric NOT NULL CHECK (value > 0),
    unit        text NOT NULL
                CHECK (unit IN ('tCO2/MWh', 'kgCO2/kWh', 'tCO2/GJ', 'kgCO2/GJ', 'kgCO2/m3',
                                'tCO2/t', 'kgCO2/kg')),
    variant     text NOT NULL DEFAULT 'all-in',
    instrument  text NOT NULL,            -- the publication the value comes from
    confidence  text NOT NULL,            -- A, A/B, B, B-, C (see shared/domain/clauses.md)
    added_by    text NOT NULL DEFAULT 'shipped',
    added_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (carrier, series, region, data_year, variant)
);

-- Green electricity a site bought or produced (certificates, green-power trading contracts,
-- on-site PV) for a period of local dates (both inclusive). Market-based scope 2 counts these kWh
-- at zero, spread evenly over the days of the record.
CREATE TABLE IF NOT EXISTS green_power (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text NOT NULL,
    first_day   date NOT NULL,
    last_day    date NOT NULL,
    kwh         numeric NOT NULL CHECK (kwh > 0),
    instrument  text NOT NULL CHECK (instrument IN ('certificate', 'contract', 'onsite')),
    reference   text NOT NULL DEFAULT '',  -- certificate or contract number
    added_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (last_day >= first_day)
);
CREATE INDEX IF NOT EXISTS green_power_site_days ON green_power (site, first_day, last_day);

-- A site's factor series and region per carrier, where it differs from the defaults
-- (electricity: the site model's emission_series and grid_region; fuels and heat:
-- clausewatch.energy.factors.DEFAULT_SERIES, national).
CREATE TABLE IF NOT EXISTS site_energy_settings (
    site        text NOT NULL,
    carrier     text NOT NULL
                CHECK (carrier IN ('natural_gas', 'heat', 'gasoline', 'diesel')),
    series      text NOT NULL,
    region      text NOT NULL DEFAULT 'national',
    PRIMARY KEY (site, carrier)
);

-- A site's own baseline-year intensities for the five-year targets (the national 2020 figures
-- apply where a site has none; CO2 per m2 has no national baseline, so it needs a row here).
CREATE TABLE IF NOT EXISTS site_energy_baselines (
    site              text NOT NULL,
    year              integer NOT NULL,
    kgce_per_m2       numeric CHECK (kgce_per_m2 > 0),
    kgce_per_person   numeric CHECK (kgce_per_person > 0),
    kgco2_per_m2      numeric CHECK (kgco2_per_m2 > 0),
    water_m3_per_person numeric CHECK (water_m3_per_person > 0),
    PRIMARY KEY (site, year)
);

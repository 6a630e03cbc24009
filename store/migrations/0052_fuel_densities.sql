-- The density a site states for its fleet fuel (from its fuel supplier or card statements), so
-- refuel events recorded in litres can be counted in kg. No default: without a stated density a
-- litres-only event is reported as not counted rather than converted with a guess.
CREATE TABLE IF NOT EXISTS fuel_densities (
    site        text NOT NULL,
    fuel        text NOT NULL CHECK (fuel IN ('gasoline', 'diesel')),
    kg_per_l    numeric NOT NULL CHECK (kg_per_l > 0.5 AND kg_per_l < 1.0),
    source      text NOT NULL,
    PRIMARY KEY (site, fuel)
);

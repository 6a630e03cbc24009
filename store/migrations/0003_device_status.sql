-- The latest status a gateway or device published on cw/{site}/{device}/status (SPEC §2): online
-- or offline, retained, usually the gateway's will. Any valid id under a known site may report,
-- so device is not a foreign key: gateways need not be devices of the site model.
CREATE TABLE device_status (
    site        text COLLATE "C" NOT NULL,
    device      text COLLATE "C" NOT NULL,
    online      boolean NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (site, device)
);

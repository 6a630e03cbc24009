-- Issue 22: an edge gateway reports the health of each of its sources on its status topic
-- ({"status": "online", "sources": [{device, kind, last_good, errors, last_error,
-- last_error_at}, ...]}, edge/gateway.py). The latest report is kept with the gateway's status;
-- a bare online/offline after it keeps it (its entries carry their own times).
ALTER TABLE device_status ADD COLUMN sources jsonb;

-- Inhibition (issue 20, docs/alerts.md "Inhibition"): while a gateway (or the site's uplink) is
-- offline, the stale-data alerts of the devices behind it are recorded as usual but inhibited:
-- `inhibited_by` names the one outage alert that stands for them, and only that one notifies.
-- An outage alert has `outage` set ('gateway': the gateway or device named in `device`;
-- 'site': the site's uplink) and is resolved when its source is online again. A member still
-- without data then is released ('released' timeline row): `inhibited_by` back to NULL, and it
-- notifies on its own.
ALTER TABLE alerts ADD COLUMN inhibited_by bigint REFERENCES alerts (id);
ALTER TABLE alerts ADD COLUMN outage text CHECK (outage IN ('gateway', 'site'));
ALTER TABLE alerts ADD CONSTRAINT alerts_outage_not_inhibited
    CHECK (outage IS NULL OR inhibited_by IS NULL);
CREATE INDEX alerts_inhibited_by ON alerts (inhibited_by) WHERE inhibited_by IS NOT NULL;
-- The open outage alerts of a site, looked up at every status change and stale-data alert.
CREATE INDEX alerts_open_outages ON alerts (site, device)
    WHERE outage IS NOT NULL AND state IN ('firing', 'acknowledged');

ALTER TABLE alert_timeline DROP CONSTRAINT alert_timeline_action_check;
ALTER TABLE alert_timeline ADD CONSTRAINT alert_timeline_action_check
    CHECK (action IN ('raised', 'escalated', 'acknowledged', 'resolved', 'reopened', 'closed',
                      'notified', 'corrected', 'commented', 'reassigned', 'released'));

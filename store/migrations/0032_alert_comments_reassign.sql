-- The alert desk (issue 19): people comment on an alert and hand it to another party. Each is
-- a timeline row (and its ledger entry, alerts/lifecycle.py) like every other step, so the
-- action check grows by 'commented' and 'reassigned'. Search over the listing reads the
-- columns it already has; no index is added for it (a site's alerts are thousands, not
-- millions, and the listing is paged).
ALTER TABLE alert_timeline DROP CONSTRAINT alert_timeline_action_check;
ALTER TABLE alert_timeline ADD CONSTRAINT alert_timeline_action_check
    CHECK (action IN ('raised', 'escalated', 'acknowledged', 'resolved', 'reopened', 'closed',
                      'notified', 'corrected', 'commented', 'reassigned'));

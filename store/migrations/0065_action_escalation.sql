-- Overdue improvement actions escalate (限期整改, issue 21): `overdue_step` counts the steps
-- taken past the deadline (0: none; 1: the owner told; n: level n-1 of the site's escalation
-- chain told), written in the transaction that queues the step's notifications, so a restart
-- never sends a step twice.
ALTER TABLE improvement_actions
    ADD COLUMN overdue_step integer NOT NULL DEFAULT 0 CHECK (overdue_step >= 0);
CREATE INDEX improvement_actions_overdue ON improvement_actions (deadline)
    WHERE state = 'open';
ALTER TABLE notifications
    ADD CONSTRAINT notifications_action_fkey
    FOREIGN KEY (action_id) REFERENCES improvement_actions (id);

-- Notifications of overdue improvement actions (限期整改, issue 21): a notification is about an
-- alert or about an action, never both. The action's foreign key comes with 0065: on a fresh
-- database improvement_actions (0062) does not exist yet here.
ALTER TABLE notifications
    ALTER COLUMN alert_id DROP NOT NULL,
    ADD COLUMN action_id bigint,
    ADD CONSTRAINT notifications_one_subject CHECK ((alert_id IS NULL) <> (action_id IS NULL));
CREATE INDEX notifications_action ON notifications (action_id) WHERE action_id IS NOT NULL;

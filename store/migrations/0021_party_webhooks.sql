-- A party's own webhook (contacts.webhook in the site file) is a target too; such notifications
-- have no row in webhook_targets.
ALTER TABLE notifications ALTER COLUMN target_id DROP NOT NULL;

-- Notification channels (issue 20): a target is a receiver of one kind, in its own wire format
-- and signing scheme (alerts/channels.py): the generic signed webhook (as before), a WeCom,
-- DingTalk or Feishu group robot, e-mail over SMTP, or an SMS gateway. `options` holds the
-- kind's settings that are not secret (recipients, message type, the SMS body template); the
-- URL and `secret` stay where they were, and are never shown. `language`: zh (default) or en.
ALTER TABLE webhook_targets
    ADD COLUMN kind text NOT NULL DEFAULT 'webhook'
        CHECK (kind IN ('webhook', 'wecom', 'dingtalk', 'feishu', 'email', 'sms')),
    ADD COLUMN language text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
    ADD COLUMN options jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(options) = 'object'),
    -- At most this many messages a minute to the receiver (NULL: the kind's default, e.g. the
    -- 20 a minute a WeCom or DingTalk robot takes); the rest wait, they are not dropped.
    ADD COLUMN max_per_minute integer CHECK (max_per_minute BETWEEN 1 AND 10000),
    -- Remind the receiver of a firing alert nobody acknowledged this long after its last notice
    -- to it (NULL: no reminders), like Alertmanager's repeat_interval.
    ADD COLUMN repeat_interval_s integer CHECK (repeat_interval_s BETWEEN 60 AND 604800);

-- Only the generic webhook signs with a secret of ours (at least 16 characters); a WeCom robot
-- has none (its key is in the URL), an SMTP server may need no password.
ALTER TABLE webhook_targets
    DROP CONSTRAINT webhook_targets_secret_check,
    ADD CONSTRAINT webhook_targets_secret_check CHECK (kind <> 'webhook' OR length(secret) >= 16);

-- "Is this receiver failing?" reads a target's latest attempts.
CREATE INDEX IF NOT EXISTS notifications_target ON notifications (target_id, id);

-- Per-user subscriptions (issue 20, alerts/subscriptions.py): a named user's own contact points
-- and routes owned by that user. On a fresh database this runs before 0042 creates `users`, so
-- users are named by id without a foreign key (ids are never reused; users are disabled, not
-- deleted).
--
-- A user's contact points: an e-mail address and a mobile number, set by the user or an admin,
-- shown to the user and admins only, never logged.
CREATE TABLE user_contacts (
    user_id    bigint PRIMARY KEY,
    email      text CHECK (char_length(email) BETWEEN 3 AND 254),
    mobile     text CHECK (mobile ~ '^\+?[0-9]{5,20}$'),
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL
);

-- A route owned by a user (NULL: the deployment's) is that user's subscription: it never ends
-- or takes part in the walk of the deployment's routes; each of its receivers (the deployment's
-- e-mail or SMS target) carries the message to the owner's contact point.
ALTER TABLE notification_routes ADD COLUMN owner_user bigint;
CREATE INDEX notification_routes_owner ON notification_routes (owner_user)
    WHERE owner_user IS NOT NULL;

-- A notice for a subscriber (`user_id`) goes to that user's contact point through its target;
-- one the subscriber may no longer see (disabled, scope changed, contact point removed) ends
-- `withheld`, not sent, with the reason in last_error.
ALTER TABLE notifications ADD COLUMN user_id bigint;
ALTER TABLE notifications DROP CONSTRAINT notifications_state_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_state_check
    CHECK (state IN ('pending', 'delivered', 'failed', 'silenced', 'withheld'));

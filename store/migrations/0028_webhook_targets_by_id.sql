-- Webhook targets are named, carry their signing secret, and are the only place a webhook URL is
-- kept (issue 18, finding 2). A target with `broadcast` receives every notification of its site
-- and level (as before); one without only those of the parties whose contacts.webhook names it.
-- Notifications, timeline rows and ledger entries refer to a target by id and name.
ALTER TABLE webhook_targets
    ADD COLUMN name text,
    ADD COLUMN secret text,
    ADD COLUMN broadcast boolean NOT NULL DEFAULT true,
    ADD COLUMN updated_by text,
    ADD COLUMN updated_at timestamptz;

-- Existing targets get a name and a fresh random secret (`clausewatch webhook secret NAME`
-- sets one the receiver knows). gen_random_uuid() draws from the server's strong random source.
UPDATE webhook_targets SET
    name = 'target-' || id,
    secret = encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text,
                                      'UTF8')), 'hex'),
    updated_by = created_by,
    updated_at = created_at;

-- A party's own webhook URL (contacts.webhook) becomes a target of its site named
-- `{site}-{party}`, used only for that party; the contact names it from now on.
INSERT INTO webhook_targets (name, site, level, url, secret, broadcast, enabled, created_by,
                             created_at, updated_by, updated_at)
SELECT site || '-' || id, site, NULL, contacts->>'webhook',
       encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')),
              'hex'),
       false, true, 'migration 0028', now(), 'migration 0028', now()
FROM parties WHERE contacts->>'webhook' ~ '^https?://';

ALTER TABLE notifications ADD COLUMN target_name text;
UPDATE notifications n SET target_id = t.id FROM webhook_targets t
    WHERE n.target_id IS NULL AND NOT t.broadcast AND t.name = n.site || '-' || n.party
      AND t.url = n.url;
UPDATE notifications n SET target_name = t.name FROM webhook_targets t WHERE t.id = n.target_id;
UPDATE notifications SET target_name = '(a party webhook)' WHERE target_name IS NULL;
ALTER TABLE notifications ALTER COLUMN target_name SET NOT NULL;
ALTER TABLE notifications DROP COLUMN url;

UPDATE parties SET contacts = jsonb_set(contacts, '{webhook}', to_jsonb(site || '-' || id))
    WHERE contacts->>'webhook' ~ '^https?://';
-- The site model kept with each site (what sync_site compares with the file, what reports load).
UPDATE sites s SET model = jsonb_set(s.model, '{parties}', (
    SELECT jsonb_agg(
        CASE WHEN p->'contacts'->>'webhook' ~ '^https?://'
             THEN jsonb_set(p, '{contacts,webhook}', to_jsonb(s.id || '-' || (p->>'id')))
             ELSE p END
        ORDER BY ord)
    FROM jsonb_array_elements(s.model->'parties') WITH ORDINALITY AS e(p, ord)))
WHERE jsonb_typeof(s.model->'parties') = 'array' AND EXISTS (
    SELECT 1 FROM jsonb_array_elements(s.model->'parties') AS e(p)
    WHERE p->'contacts'->>'webhook' ~ '^https?://');

-- `notified` timeline rows (returned with the alert) held the URL: the target instead.
UPDATE alert_timeline tl
    SET data = (tl.data - 'url') || jsonb_build_object('target', n.target_id,
                                                       'target_name', n.target_name)
    FROM notifications n
    WHERE tl.action = 'notified' AND tl.data ? 'url' AND n.id = (tl.data->>'notification')::bigint;
UPDATE alert_timeline SET data = data - 'url' WHERE action = 'notified' AND data ? 'url';

ALTER TABLE webhook_targets
    ALTER COLUMN name SET NOT NULL,
    ALTER COLUMN secret SET NOT NULL,
    ALTER COLUMN updated_by SET NOT NULL,
    ALTER COLUMN updated_at SET NOT NULL,
    ADD CONSTRAINT webhook_targets_name_key UNIQUE (name),
    ADD CONSTRAINT webhook_targets_name_check CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,128}$'),
    ADD CONSTRAINT webhook_targets_secret_check CHECK (length(secret) >= 16);

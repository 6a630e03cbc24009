-- Tokens expire and can be rotated (issue 18, finding 11). Every token has an expiry; a rotated
-- token is revoked and names the token that replaced it (same role, sites and label).
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS replaced_by bigint REFERENCES api_tokens (id);
-- Tokens made before there was an expiry: 90 days from their creation, the default lifetime,
-- but never less than 30 days from this upgrade, so nobody is cut off without notice.
UPDATE api_tokens
   SET expires_at = greatest(created_at + interval '90 days', now() + interval '30 days')
 WHERE expires_at IS NULL;
ALTER TABLE api_tokens ALTER COLUMN expires_at SET NOT NULL;
ALTER TABLE api_tokens
    ADD CONSTRAINT api_tokens_expires_after_creation CHECK (expires_at > created_at);

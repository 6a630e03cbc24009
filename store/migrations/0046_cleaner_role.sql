-- Issue 19: the role `cleaner` (保洁, staff on rounds) records field check-ins at the spaces of
-- its sites and nothing else (api/auth.py). Users and tokens may hold it.
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('viewer', 'facility_manager', 'energy_officer', 'admin', 'cleaner'));
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('viewer', 'facility_manager', 'energy_officer', 'admin', 'cleaner'));

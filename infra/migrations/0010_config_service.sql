-- Config service additions to the governance schema (0002).

-- The config version at which model prices last changed: the snapshot's price_version.
ALTER TABLE config_state ADD COLUMN IF NOT EXISTS price_version bigint NOT NULL DEFAULT 0;

-- Keys: when a key was last rotated (a rotation replaces key_hash and key_prefix).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rotated_at timestamptz;
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id);

-- Listing filters and authorization checks by team.
CREATE INDEX IF NOT EXISTS model_aliases_team ON model_aliases (team_id);
CREATE INDEX IF NOT EXISTS audit_log_version ON audit_log (config_version);

-- Foundation: the monotonic config version, the audit log, event dedupe.

-- Every committed governance change takes nextval() in its own transaction.
CREATE SEQUENCE IF NOT EXISTS config_version_seq AS bigint START 1;

CREATE TABLE IF NOT EXISTS config_state (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    version         bigint NOT NULL DEFAULT 0,
    changed_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO config_state (id, version) VALUES (true, 0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS audit_log (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor           text NOT NULL,
    actor_team_id   text,
    action          text NOT NULL,
    target_type     text NOT NULL,
    target_id       text NOT NULL,
    team_id         text,
    before          jsonb,
    after           jsonb,
    config_version  bigint
);
CREATE INDEX IF NOT EXISTS audit_log_team_at ON audit_log (team_id, at DESC);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target_type, target_id);

-- Effectively-once processing: a side effect and its event id commit together.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer        text NOT NULL,
    event_id        text NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_at ON processed_events (processed_at);

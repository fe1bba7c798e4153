-- Quota: budget spend per calendar period (UTC), rolled up from usage events by the
-- quota service; idempotent by request id through processed_events (consumer 'quota').
-- Every update takes a new seq, so Redis copies of a row only ever move forward.

CREATE SEQUENCE IF NOT EXISTS quota_spend_seq AS bigint START 1;

CREATE TABLE IF NOT EXISTS quota_spend (
    scope           text NOT NULL CHECK (scope IN ('team', 'key')),
    subject_id      text NOT NULL,
    team_id         text NOT NULL,
    period          text NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    period_start    timestamptz NOT NULL,
    spent_micros    bigint NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    tokens          bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    requests        bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
    seq             bigint NOT NULL DEFAULT nextval('quota_spend_seq'),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, subject_id, period, period_start)
);
CREATE INDEX IF NOT EXISTS quota_spend_team ON quota_spend (team_id, period, period_start);

-- Alerts as an outbox: one row per (budget, period, kind, threshold), written in the
-- transaction that crossed it; published to NATS (and as a quota.alert job) after.
CREATE TABLE IF NOT EXISTS quota_alerts (
    id                  bigserial PRIMARY KEY,
    scope               text NOT NULL CHECK (scope IN ('team', 'key')),
    subject_id          text NOT NULL,
    team_id             text NOT NULL,
    period              text NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    period_start        timestamptz NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('threshold_crossed', 'exhausted')),
    threshold_pct       integer NOT NULL DEFAULT 0,
    spent_micros        bigint NOT NULL,
    limit_micros        bigint NOT NULL,
    hard                boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    published_at        timestamptz,
    job_published_at    timestamptz,
    UNIQUE (scope, subject_id, period, period_start, kind, threshold_pct)
);
CREATE INDEX IF NOT EXISTS quota_alerts_unpublished ON quota_alerts (id)
    WHERE published_at IS NULL OR job_published_at IS NULL;

-- The usage and cost ledger, written by telemetry. Raw rows are partitioned by
-- month of started_at; dedupe is by request_id in usage_request_ids (a partitioned
-- table's unique key must include the partition key, a replay's started_at may not).

CREATE TABLE IF NOT EXISTS usage_request_ids (
    request_id      text PRIMARY KEY,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS usage_events (
    request_id          text NOT NULL,
    team_id             text NOT NULL,
    key_id              text NOT NULL,
    user_id             text,
    alias               text NOT NULL,
    model               text NOT NULL,
    backend_id          text NOT NULL,
    provider            text NOT NULL,
    api                 text NOT NULL,
    stream              boolean NOT NULL,
    status              text NOT NULL,
    http_status         integer NOT NULL,
    error_type          text,
    prompt_tokens       bigint NOT NULL,
    completion_tokens   bigint NOT NULL,
    total_tokens        bigint NOT NULL,
    tokens_estimated    boolean NOT NULL,
    cost_micros         bigint NOT NULL,
    price_version       text NOT NULL,
    latency_ms          double precision NOT NULL,
    ttft_ms             double precision,
    attempts            integer NOT NULL,
    fallback_used       boolean NOT NULL,
    cache_hit           boolean NOT NULL,
    origin              text NOT NULL,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (started_at);

CREATE TABLE IF NOT EXISTS usage_events_default PARTITION OF usage_events DEFAULT;
CREATE INDEX IF NOT EXISTS usage_events_team_time ON usage_events (team_id, started_at);
CREATE INDEX IF NOT EXISTS usage_events_request ON usage_events (request_id);

-- Rollups: one row per (window, bucket start, team, key, model, backend).
CREATE TABLE IF NOT EXISTS usage_rollups (
    window_kind         text NOT NULL CHECK (window_kind IN ('minute', 'hour', 'day')),
    bucket_start        timestamptz NOT NULL,
    team_id             text NOT NULL,
    key_id              text NOT NULL,
    model               text NOT NULL,
    backend_id          text NOT NULL,
    requests            bigint NOT NULL DEFAULT 0,
    errors              bigint NOT NULL DEFAULT 0,
    prompt_tokens       bigint NOT NULL DEFAULT 0,
    completion_tokens   bigint NOT NULL DEFAULT 0,
    cost_micros         bigint NOT NULL DEFAULT 0,
    latency_ms_sum      double precision NOT NULL DEFAULT 0,
    latency_hist        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (window_kind, bucket_start, team_id, key_id, model, backend_id)
);
CREATE INDEX IF NOT EXISTS usage_rollups_team ON usage_rollups (team_id, window_kind, bucket_start);

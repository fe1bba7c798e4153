-- The usage and cost ledger, written by telemetry (services/telemetry, docs/telemetry.md).
--
-- usage_request_ids   one row per request ever recorded: the dedupe key. A partitioned
--                     table's unique key must include the partition key, and a replay's
--                     started_at may differ, so dedupe lives in this plain table.
-- usage_events        the raw rows, partitioned by month of started_at (UTC):
--                     usage_events_pYYYYMM, created ahead of time by telemetry's
--                     maintenance (usage_ensure_month_partition); anything outside them
--                     lands in usage_events_default and is moved when its month is created.
-- usage_rollups       per minute / hour / day and team, key, model, backend; written in the
--                     same transaction as the raw rows, only for newly recorded requests.
--                     Budgets and the spend API read these, never the raw rows.
-- usage_rollup_cursor how far the per-minute rollups were published on NATS.

CREATE TABLE IF NOT EXISTS usage_request_ids (
    request_id      text PRIMARY KEY,
    started_at      timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
-- retention deletes by recording time; BRIN stays tiny on an append-mostly column
CREATE INDEX IF NOT EXISTS usage_request_ids_recorded
    ON usage_request_ids USING brin (recorded_at);

CREATE TABLE IF NOT EXISTS usage_events (
    request_id              text NOT NULL,
    event_id                text NOT NULL,
    source                  text NOT NULL,
    team_id                 text NOT NULL,
    key_id                  text NOT NULL,
    user_id                 text,
    alias                   text NOT NULL,
    model                   text NOT NULL,
    backend_id              text NOT NULL,
    provider                text NOT NULL,
    api                     text NOT NULL,
    stream                  boolean NOT NULL,
    status                  text NOT NULL,
    http_status             integer NOT NULL,
    error_type              text,
    prompt_tokens           bigint NOT NULL,
    completion_tokens       bigint NOT NULL,
    total_tokens            bigint NOT NULL,
    tokens_estimated        boolean NOT NULL,
    cost_micros             bigint NOT NULL,
    price_version           text NOT NULL,
    reserved_tokens         bigint NOT NULL,
    reserved_cost_micros    bigint NOT NULL,
    latency_ms              double precision NOT NULL,
    ttft_ms                 double precision,
    attempts                integer NOT NULL,
    fallback_used           boolean NOT NULL,
    cache_hit               boolean NOT NULL,
    origin                  text NOT NULL,
    trace_id                text,
    started_at              timestamptz NOT NULL,
    finished_at             timestamptz NOT NULL,
    recorded_at             timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (started_at);

CREATE TABLE IF NOT EXISTS usage_events_default PARTITION OF usage_events DEFAULT;
CREATE INDEX IF NOT EXISTS usage_events_team_time ON usage_events (team_id, started_at);
CREATE INDEX IF NOT EXISTS usage_events_request ON usage_events (request_id);

-- Rollups: one row per (window, bucket start, team, key, model, backend). latency_hist
-- counts requests per fixed latency bucket (bounds in hyperinfer.telemetry.domain,
-- LATENCY_BOUNDS_MS); rows merge by adding counts, percentiles come from the merged counts.
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
    latency_hist        bigint[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (window_kind, bucket_start, team_id, key_id, model, backend_id)
);
CREATE INDEX IF NOT EXISTS usage_rollups_team ON usage_rollups (team_id, window_kind, bucket_start);

CREATE TABLE IF NOT EXISTS usage_rollup_cursor (
    id                  boolean PRIMARY KEY DEFAULT true CHECK (id),
    published_through   timestamptz NOT NULL
);

-- Element-wise sum of two histograms (a missing element counts 0), and its aggregate.
CREATE OR REPLACE FUNCTION usage_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN a IS NULL THEN b
        WHEN b IS NULL THEN a
        ELSE ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0) FROM unnest(a, b) AS t(x, y))
    END
$$;

CREATE OR REPLACE AGGREGATE usage_hist_sum(bigint[]) (SFUNC = usage_hist_add, STYPE = bigint[]);

-- Create the partition of one UTC month unless it exists; rows of that month waiting in
-- the default partition move into it first (ATTACH refuses while the default holds any).
CREATE OR REPLACE FUNCTION usage_ensure_month_partition(month_start timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz := date_trunc('month', month_start, 'UTC');
    hi timestamptz := date_trunc('month', lo + interval '32 days', 'UTC');
    part text := 'usage_events_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE usage_events INCLUDING DEFAULTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM usage_events_default'
        ' WHERE started_at >= %L AND started_at < %L RETURNING *)'
        ' INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format(
        'ALTER TABLE usage_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        part, lo, hi);
    RETURN true;
END
$$;

-- This month and the next exist from the start; telemetry keeps creating them ahead.
SELECT usage_ensure_month_partition(now());
SELECT usage_ensure_month_partition(now() + interval '1 month');

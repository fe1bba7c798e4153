-- Event pipeline: results of asynchronous chat jobs (inference.requested).
CREATE TABLE IF NOT EXISTS inference_jobs (
    job_id          text PRIMARY KEY,
    event_id        text NOT NULL,
    team_id         text NOT NULL,
    api_key_id      text NOT NULL,
    status          text NOT NULL CHECK (status IN ('ok', 'error')),
    response        jsonb,
    error           text,
    webhook_url     text,
    attempts        integer NOT NULL DEFAULT 1,
    completed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS inference_jobs_team_at ON inference_jobs (team_id, completed_at DESC);

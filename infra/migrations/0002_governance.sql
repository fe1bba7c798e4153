-- Governance data owned by the config service. Money: integer micro-units.
-- Every row carries a version for optimistic concurrency (ETag).

CREATE TABLE IF NOT EXISTS teams (
    id              text PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    budget_micros   bigint CHECK (budget_micros IS NULL OR budget_micros >= 0),
    failure_policy  text NOT NULL DEFAULT 'closed' CHECK (failure_policy IN ('closed', 'open')),
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS users (
    id              text PRIMARY KEY,
    email           text NOT NULL UNIQUE,
    team_id         text REFERENCES teams (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('admin', 'team_admin', 'member')),
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS users_team ON users (team_id);

CREATE TABLE IF NOT EXISTS api_keys (
    id              text PRIMARY KEY,
    key_hash        text NOT NULL UNIQUE,
    key_prefix      text NOT NULL,
    name            text NOT NULL DEFAULT '',
    team_id         text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id         text REFERENCES users (id) ON DELETE SET NULL,
    scopes          text[] NOT NULL DEFAULT '{}',
    expires_at      timestamptz,
    active          boolean NOT NULL DEFAULT true,
    revoked_at      timestamptz,
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS api_keys_team ON api_keys (team_id);

CREATE TABLE IF NOT EXISTS backends (
    id                      text PRIMARY KEY,
    name                    text NOT NULL UNIQUE,
    kind                    text NOT NULL CHECK (kind IN
                                ('openai', 'anthropic', 'gemini', 'openai_compatible', 'triton', 'echo')),
    base_url                text NOT NULL DEFAULT '',
    models                  text[] NOT NULL DEFAULT '{}',
    weight                  double precision NOT NULL DEFAULT 1 CHECK (weight >= 0),
    tags                    text[] NOT NULL DEFAULT '{}',
    timeout_s               double precision NOT NULL DEFAULT 60 CHECK (timeout_s > 0),
    credentials_ciphertext  text,
    version                 integer NOT NULL DEFAULT 1,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS model_aliases (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    team_id         text REFERENCES teams (id) ON DELETE CASCADE,
    -- ordered: [{"backend_id": ..., "model": ...}, ...]; the first is primary
    targets         jsonb NOT NULL CHECK (jsonb_typeof(targets) = 'array'),
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS model_aliases_name_team
    ON model_aliases (name, coalesce(team_id, ''));

CREATE TABLE IF NOT EXISTS quotas (
    id                  text PRIMARY KEY,
    scope               text NOT NULL CHECK (scope IN ('team', 'key')),
    subject_id          text NOT NULL,
    team_id             text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    rpm                 integer CHECK (rpm IS NULL OR rpm >= 0),
    tpm                 integer CHECK (tpm IS NULL OR tpm >= 0),
    budget_micros       bigint CHECK (budget_micros IS NULL OR budget_micros >= 0),
    soft_limit_micros   bigint CHECK (soft_limit_micros IS NULL OR soft_limit_micros >= 0),
    grace_micros        bigint NOT NULL DEFAULT 0 CHECK (grace_micros >= 0),
    budget_period       text NOT NULL DEFAULT 'monthly'
                            CHECK (budget_period IN ('daily', 'weekly', 'monthly')),
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scope, subject_id)
);
CREATE INDEX IF NOT EXISTS quotas_team ON quotas (team_id);

CREATE TABLE IF NOT EXISTS routing_rules (
    id              text PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    alias           text,
    strategy        text NOT NULL DEFAULT 'weighted' CHECK (strategy IN ('weighted', 'score', 'ordered')),
    weights         jsonb NOT NULL DEFAULT '{}',
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS model_prices (
    model                   text PRIMARY KEY,
    input_per_mtok_micros   bigint NOT NULL CHECK (input_per_mtok_micros >= 0),
    output_per_mtok_micros  bigint NOT NULL CHECK (output_per_mtok_micros >= 0),
    version                 integer NOT NULL DEFAULT 1,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Public API (spec D): API keys, their monthly execution quota, and token buckets for rate limits.
-- The gateway owns these tables; they are state, not event-sourced (DESIGN section 1).

-- A key is stored only as sha256 of the full key: the key is 256 random bits, so a fast hash is enough
-- (no dictionary to attack) and the lookup is one unique-index probe. Limits are per key and read on every
-- request, so a change applies to the next request without a restart.
CREATE TABLE api_keys (
    id            uuid        PRIMARY KEY,
    tenant_id     text        NOT NULL,
    name          text        NOT NULL,
    key_hash      bytea       NOT NULL UNIQUE,
    key_hint      text        NOT NULL,            -- "weft_3fa9c1..." : recognisable, useless to an attacker
    workflow_ids  uuid[]      NOT NULL,
    active        boolean     NOT NULL DEFAULT true,
    expires_at    timestamptz,
    monthly_limit integer     CHECK (monthly_limit >= 0),          -- NULL = no monthly limit
    rate_burst    integer     NOT NULL DEFAULT 10 CHECK (rate_burst BETWEEN 1 AND 1000000),
    rate_per_minute integer   NOT NULL DEFAULT 60 CHECK (rate_per_minute BETWEEN 1 AND 60000000),
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    rotated_at    timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- Executions per key and calendar month (UTC). One row per (key, month), incremented with a conditional
-- upsert: the row lock makes "used < limit" and the increment one atomic step, so two concurrent executes
-- at limit - 1 cannot both pass.
CREATE TABLE api_key_usage (
    tenant_id text    NOT NULL,
    key_id    uuid    NOT NULL,
    month     date    NOT NULL,
    used      integer NOT NULL CHECK (used >= 0),
    PRIMARY KEY (key_id, month)
);

-- The runs a key started and was charged for. The primary key makes a retried request (same
-- Idempotency-Key, same run) cost one execution, and lets a key see a run it started that the executor
-- has not committed yet (status "pending").
CREATE TABLE api_key_executions (
    tenant_id  text        NOT NULL,
    key_id     uuid        NOT NULL,
    run_id     uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (key_id, run_id)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys, api_key_usage, api_key_executions TO weft_app;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE api_key_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_key_usage FORCE ROW LEVEL SECURITY;
ALTER TABLE api_key_executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_key_executions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON api_key_usage
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON api_key_executions
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

-- Token buckets, one row per limited client ("key:<uuid>", "user:<tenant>/<user>"), shared by every
-- gateway process. A request takes its token with one INSERT ... ON CONFLICT DO UPDATE (the statement is
-- in libs/security/ratelimit.py, next to the reference math it mirrors): the row lock serialises one
-- client's requests across all gateways, and different clients never wait for each other.
-- UNLOGGED: a bucket write produces no WAL, so its commit waits for no fsync. After a Postgres crash the
-- table is empty and every bucket starts full again, which only ever errs towards letting a client through.
-- Units: tokens in millionths of a token, time in microseconds since the epoch; integers, so the SQL and
-- the reference give bit-identical answers. burst and per_minute are the limit the last request used.
CREATE UNLOGGED TABLE rate_buckets (
    bucket     text    PRIMARY KEY,
    tenant_id  text    NOT NULL,
    burst      integer NOT NULL,
    per_minute integer NOT NULL,
    tokens     bigint  NOT NULL,
    at_us      bigint  NOT NULL,
    allowed    boolean NOT NULL  -- whether the last request got a token
);
GRANT SELECT, INSERT, UPDATE, DELETE ON rate_buckets TO weft_app;
ALTER TABLE rate_buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_buckets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rate_buckets
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

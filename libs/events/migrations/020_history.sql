-- The assistant's history (spec A): one row per command a user gave the assistant, projected inline from the
-- workflow's and its runs' events (libs/readmodels/history.py), so it is never stale and rebuilds from the log.
-- Numbered 020, well after the last migration at the time (011), because other branches add migrations too.
CREATE TABLE history (
    id           uuid        PRIMARY KEY,      -- the workflow's id: one command, one workflow
    tenant_id    text        NOT NULL,
    user_id      text        NOT NULL,
    workflow_id  uuid        NOT NULL,
    command      text        NOT NULL,
    action_id    text,                         -- the quick action the command was started from, if any
    status       text        NOT NULL,         -- awaiting_plan_approval | pending | running | completed | failed | cancelled
    last_run_id  uuid,
    created_at   timestamptz NOT NULL,
    executed_at  timestamptz,                  -- when its latest run started
    finished_at  timestamptz,
    -- Full-text search over the command (A: "search in command text"); english stems "emails" to "email".
    search       tsvector    GENERATED ALWAYS AS (to_tsvector('english', command)) STORED
);
-- A user's page, newest first, with or without a status or date filter: one index range scan; the count of
-- the same filter is an index-only scan over the user's rows.
CREATE INDEX history_user_created ON history (tenant_id, user_id, created_at DESC, id);
CREATE INDEX history_user_status ON history (tenant_id, user_id, status, created_at DESC);
CREATE INDEX history_search ON history USING gin (search);
CREATE INDEX history_last_run ON history (last_run_id) WHERE last_run_id IS NOT NULL;
CREATE INDEX history_action ON history (tenant_id, user_id, action_id) WHERE action_id IS NOT NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON history TO weft_app;
ALTER TABLE history ENABLE ROW LEVEL SECURITY;
ALTER TABLE history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON history
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

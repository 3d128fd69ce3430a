-- Plans: drafts created from goals carry their goal, schedule, source and current plan version/hash;
-- runs get a per-workflow number (the console contract's numeric runId); planning results are cached.
ALTER TABLE workflows
    ADD COLUMN goal         text,
    ADD COLUMN schedule     text,
    ADD COLUMN source       text    NOT NULL DEFAULT 'api',
    ADD COLUMN plan_version integer NOT NULL DEFAULT 0,
    ADD COLUMN plan_hash    text;

ALTER TABLE runs ADD COLUMN run_number integer NOT NULL DEFAULT 0;
CREATE INDEX runs_tenant_workflow_number ON runs (tenant_id, workflow_id, run_number DESC);

CREATE TABLE plan_cache (
    tenant_id  text        NOT NULL,
    cache_key  text        NOT NULL,
    result     jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, cache_key)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON plan_cache TO weft_app;
ALTER TABLE plan_cache ENABLE ROW LEVEL SECURITY;
ALTER TABLE plan_cache FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON plan_cache
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

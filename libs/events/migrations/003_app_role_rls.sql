-- Services do tenant work as weft_app: it owns nothing, may not UPDATE or DELETE events, and row-level
-- security (forced, so even the owner is checked) limits every row to the tenant set for the transaction
-- with set_config('weft.tenant_id', ..., true). A forgotten WHERE tenant_id = ... returns nothing, not
-- another tenant's data. System readers (relay, rebuild) use a role with BYPASSRLS (the superuser locally).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'weft_app') THEN
        CREATE ROLE weft_app NOLOGIN;
    END IF;
END;
$$;

GRANT USAGE ON SCHEMA public TO weft_app;
GRANT SELECT, INSERT ON events, processed_commands TO weft_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON workflows, runs, idempotency_keys TO weft_app;

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE processed_commands ENABLE ROW LEVEL SECURITY;
ALTER TABLE processed_commands FORCE ROW LEVEL SECURITY;
ALTER TABLE workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflows FORCE ROW LEVEL SECURITY;
ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs FORCE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON events
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON processed_commands
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON workflows
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON runs
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

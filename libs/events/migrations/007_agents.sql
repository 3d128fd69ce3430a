-- Registered agents: an `agent` step with agent_id POSTs its prompt to the agent's endpoint (through the
-- guarded outbound client) with these extra headers. Tenant rows under the same forced row-level security
-- as every other table (003): weft_app sees only the transaction's tenant.
CREATE TABLE agents (
    id         uuid        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    name       text        NOT NULL,
    endpoint   text        NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX agents_tenant ON agents (tenant_id, created_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON agents TO weft_app;
ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

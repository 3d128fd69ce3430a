-- The command log (DESIGN section 3, docs/decisions/0030): a command is accepted when its row here commits.
-- The gateway inserts the row, then publishes the command to JetStream (the fast path). The relay publishes
-- again any row whose command has no outcome in processed_commands after a short delay (the slow path), and
-- deletes rows whose outcome is recorded. So the log holds only commands in flight; processed_commands stays
-- the record of what happened.
CREATE TABLE command_log (
    command_id   uuid PRIMARY KEY,
    tenant_id    text        NOT NULL,
    subject      text        NOT NULL,   -- weft.cmd.<service>.<tenant>.<Command>
    payload      bytea       NOT NULL,   -- the encoded CommandEnvelope, published as is
    reply_to     text,                   -- the gateway inbox that waits for the outcome (a hint; may be gone)
    accepted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set by the relay after each of its publishes (backing off); until then it is accepted_at plus the
    -- relay's WEFT_COMMAND_REPUBLISH_S. The table holds only commands in flight, so it is scanned whole.
    next_publish_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0
);

GRANT SELECT, INSERT ON command_log TO weft_app;
ALTER TABLE command_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE command_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON command_log
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

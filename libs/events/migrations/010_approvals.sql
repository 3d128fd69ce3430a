-- Approvals (docs/decisions/0009).

-- Consumed approval-link token ids. A read model written inline by the projection of the decision event
-- (PlanApproved, ApprovalDecisionRecorded) in the SAME transaction as that event, so a token is spent exactly
-- when its decision commits: the primary key lets one of any number of concurrent uses through and refuses
-- the rest (their append rolls back). Rebuildable from the log like every read model.
CREATE TABLE approval_tokens_used (
    id        uuid        PRIMARY KEY,   -- the token's id (its jti); `id` like every read model's key
    tenant_id text        NOT NULL,
    kind      text        NOT NULL,      -- plan | step
    stream_id text        NOT NULL,      -- the workflow or run the decision belongs to
    used_at   timestamptz NOT NULL
);

-- Emails the notifier sent, keyed by the event that called for them and the recipient. Written right AFTER
-- the SMTP server accepted the message (never before: a crash between the two must resend, not lose it), so
-- delivery is at-least-once; the deterministic Message-ID lets a duplicate be recognised.
CREATE TABLE sent_emails (
    event_id   uuid        NOT NULL,
    recipient  text        NOT NULL,
    tenant_id  text        NOT NULL,
    kind       text        NOT NULL,     -- plan_approval | step_approval | step_reminder | step_escalation
    message_id text        NOT NULL,
    error      text,                     -- set when the server refused it for good (a 5xx): not retried
    sent_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (event_id, recipient)
);
CREATE INDEX sent_emails_tenant ON sent_emails (tenant_id, sent_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON approval_tokens_used, sent_emails TO weft_app;
ALTER TABLE approval_tokens_used ENABLE ROW LEVEL SECURITY;
ALTER TABLE approval_tokens_used FORCE ROW LEVEL SECURITY;
ALTER TABLE sent_emails ENABLE ROW LEVEL SECURITY;
ALTER TABLE sent_emails FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON approval_tokens_used
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON sent_emails
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

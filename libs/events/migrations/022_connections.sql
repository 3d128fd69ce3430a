-- Connected accounts (docs/decisions/0072): a user's OAuth tokens per provider, sealed with AES-256-GCM
-- (libs/security/sealing.py); key_id names the key that sealed them, so keys rotate. Gateway state, not
-- event-sourced: tokens must never be written to an event (events are forever and relayed to NATS).
CREATE TABLE connections (
    tenant_id         text        NOT NULL,
    user_id           text        NOT NULL,
    provider          text        NOT NULL,
    account_email     text,
    scopes            text[]      NOT NULL DEFAULT '{}',
    expires_at        timestamptz,                -- of the access token
    key_id            text        NOT NULL,
    access_token_enc  bytea       NOT NULL,
    refresh_token_enc bytea,
    instance_url      text,                       -- Salesforce: the org's REST API base
    connected_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    refreshed_at      timestamptz,
    PRIMARY KEY (tenant_id, user_id, provider)
);

-- An authorization in flight: `state` is single use (deleted when the callback takes it) and short-lived;
-- the PKCE verifier is sealed like a token.
CREATE TABLE oauth_states (
    state        text        PRIMARY KEY,
    tenant_id    text        NOT NULL,
    user_id      text        NOT NULL,
    provider     text        NOT NULL,
    key_id       text        NOT NULL,
    verifier_enc bytea       NOT NULL,
    expires_at   timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON connections TO weft_app;
ALTER TABLE connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE connections FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON connections
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
-- The callback arrives without a bearer token: the state carries the tenant ("<tenant>.<256 random bits>"), so
-- its lookup runs under row-level security like every other query.
GRANT SELECT, INSERT, DELETE ON oauth_states TO weft_app;
ALTER TABLE oauth_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_states FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oauth_states
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

-- Spent dashboard sign-in links (libs/security/signin_tokens.py). Not a read model: no event records a sign-in,
-- so `weft projections rebuild` must never empty this table (it did when these ids lived in
-- approval_tokens_used, and a spent link could then be used again until it expired).
CREATE TABLE signin_links_used (
    id        uuid        PRIMARY KEY,   -- the link's jti: the primary key lets one of any concurrent uses through
    tenant_id text        NOT NULL,
    user_id   text        NOT NULL,
    used_at   timestamptz NOT NULL
);

GRANT SELECT, INSERT ON signin_links_used TO weft_app;
ALTER TABLE signin_links_used ENABLE ROW LEVEL SECURITY;
ALTER TABLE signin_links_used FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON signin_links_used
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

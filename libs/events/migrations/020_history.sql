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
    -- Plus one lexeme naming the owner (history_owner_lexeme), so the GIN index intersects "this user's rows"
    -- with the words inside the index instead of fetching every tenant's matches from the heap.
    search       tsvector    GENERATED ALWAYS AS (to_tsvector('english', command)
                                 || array_to_tsvector(ARRAY['u' || md5(tenant_id || '/' || user_id)])) STORED
);
-- A user's page, newest first, with or without a status or date filter: one index range scan; the count of
-- the same filter is an index-only scan over the user's rows.
CREATE INDEX history_user_created ON history (tenant_id, user_id, created_at DESC, id);
CREATE INDEX history_user_status ON history (tenant_id, user_id, status, created_at DESC);
CREATE INDEX history_search ON history USING gin (search);
CREATE INDEX history_last_run ON history (last_run_id) WHERE last_run_id IS NOT NULL;
CREATE INDEX history_action ON history (tenant_id, user_id, action_id) WHERE action_id IS NOT NULL;

-- Totals per user and status, kept by the projection in the same statement batch as the rows: the page's
-- "total" without a search or date filter is a sum of at most six rows, not a count over 100,000.
CREATE TABLE history_counts (
    tenant_id text    NOT NULL,
    user_id   text    NOT NULL,
    status    text    NOT NULL,
    n         bigint  NOT NULL,
    PRIMARY KEY (tenant_id, user_id, status)
);

-- Why a function for search: under row-level security Postgres evaluates a query's operators that are not
-- leakproof (tsvector @@ tsquery is not) only after the policy's qual, so it cannot use the GIN index for
-- them and scans every row of the tenant (https://www.postgresql.org/docs/current/ddl-rowsecurity.html,
-- "leakproof"). This SECURITY DEFINER function runs as the migration's role (which bypasses RLS), uses the
-- index, and applies the policy's own predicate itself: the tenant is the transaction's weft.tenant_id, never
-- an argument, so a caller cannot name another tenant. The outer query still runs under RLS.
-- It returns each match's id, time and status, so the page and its total are computed from its result alone.
CREATE FUNCTION history_search(p_user text, p_query text) RETURNS TABLE (id uuid, created_at timestamptz, status text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    -- EXECUTE plans with the actual words (a custom plan), so the GIN index intersects them with the owner
    -- lexeme; a generic plan would walk the user's btree range and test every row.
    RETURN QUERY EXECUTE
        'SELECT id, created_at, status FROM public.history'
        ' WHERE search @@ (websearch_to_tsquery(''english'', $2) && $3::tsquery) AND tenant_id = $1 AND user_id = $4'
        USING current_setting('weft.tenant_id', true), p_query,
              'u' || md5(current_setting('weft.tenant_id', true) || '/' || p_user), p_user;
END
$$;
REVOKE ALL ON FUNCTION history_search(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION history_search(text, text) TO weft_app;

GRANT SELECT, INSERT, UPDATE, DELETE ON history, history_counts TO weft_app;
ALTER TABLE history_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE history_counts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON history_counts
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
ALTER TABLE history ENABLE ROW LEVEL SECURITY;
ALTER TABLE history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON history
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

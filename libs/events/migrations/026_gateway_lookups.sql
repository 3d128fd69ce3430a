-- Lookups that app-login processes make before a tenant is known (or across all tenants), as four narrow
-- SECURITY DEFINER functions, so the gateway, planner and notifier log in as plain weft_app members and
-- none needs BYPASSRLS (docs/decisions/0115):
--   weft_admit_api_key(hash, now)   one key's admission record, found by the sha256 of the whole key, and a
--                                   token from that key's bucket; at most one row, never a list;
--   weft_take_rate_token(...)       a token from one named bucket (v2 users, failed authentications, callers
--                                   without a key); this is the one copy of the bucket arithmetic in SQL
--                                   (the reference is `take` in libs/security/ratelimit.py);
--   weft_sweep_rate_buckets(now)    deletes buckets idle long enough to be full again (changes no answer);
--   weft_count_dead_letters()       the notifier's gauge: how many dead letters wait, all tenants, a number.
-- They run as weft_lookup, not as the owner: NOLOGIN, no BYPASSRLS, no membership in anything; it may read
-- the few api_keys and webhook_dead_letters columns used here and write rate_buckets, each through a policy
-- of its own. A bug in a function body can reach those three tables and nothing else. search_path is pinned
-- and every name qualified, so a caller cannot plant an object the body would resolve. EXECUTE goes to
-- weft_app only (weft_system has it as a member of weft_app).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'weft_lookup') THEN
        CREATE ROLE weft_lookup NOLOGIN;
    END IF;
END;
$$;
ALTER ROLE weft_lookup NOLOGIN NOBYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;

GRANT USAGE ON SCHEMA public TO weft_lookup;
GRANT SELECT (id, tenant_id, name, key_hash, workflow_ids, active, expires_at, rate_burst, rate_per_minute)
    ON api_keys TO weft_lookup;
GRANT SELECT, INSERT, UPDATE, DELETE ON rate_buckets TO weft_lookup;
GRANT SELECT (replayed_at) ON webhook_dead_letters TO weft_lookup;
-- Permissive policies for this role alone (policies OR together per role): every other role keeps
-- tenant_isolation only.
CREATE POLICY gateway_lookup ON api_keys FOR SELECT TO weft_lookup USING (true);
CREATE POLICY gateway_lookup ON rate_buckets TO weft_lookup USING (true) WITH CHECK (true);
CREATE POLICY gateway_lookup ON webhook_dead_letters FOR SELECT TO weft_lookup USING (true);

-- One token from one bucket: a new bucket starts full minus this request; otherwise the bucket is refilled
-- for the time since its last request (capped at the time that fills it, so the product stays small) and a
-- token is taken only if there is a whole one. EXCLUDED is the proposed row: its at_us is now, burst and
-- per_minute the limit this request uses (a changed setting applies at once). One statement: the row lock
-- ON CONFLICT takes serialises one client's requests across gateways and is held only while it runs.
-- Units: tokens in millionths, time in microseconds since the epoch, integers only (bit-identical to `take`).
-- plpgsql, not sql: a definer function is never inlined, and a sql function's body is planned again on
-- every call, while plpgsql keeps its plans for the session (bench/bench_public_api.py, part 3, measures it).
-- use_column: the output names (allowed, tokens, at_us) are also column names; in a query they mean columns.
CREATE FUNCTION weft_take_rate_token(p_bucket text, p_tenant text, p_burst integer, p_per_minute integer,
                                     p_now_us bigint)
RETURNS TABLE (allowed boolean, tokens bigint, at_us bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO public.rate_buckets AS b (bucket, tenant_id, burst, per_minute, tokens, at_us, allowed)
    VALUES (p_bucket, p_tenant, p_burst, p_per_minute, p_burst::bigint * 1000000 - 1000000,
            coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint), true)
    ON CONFLICT (bucket) DO UPDATE SET
        allowed = least(EXCLUDED.burst::bigint * 1000000, b.tokens + least(greatest(EXCLUDED.at_us - b.at_us, 0),
                  (EXCLUDED.burst::bigint * 60000000 + EXCLUDED.per_minute - 1) / EXCLUDED.per_minute)
                  * EXCLUDED.per_minute / 60) >= 1000000,
        tokens = least(EXCLUDED.burst::bigint * 1000000, b.tokens + least(greatest(EXCLUDED.at_us - b.at_us, 0),
                 (EXCLUDED.burst::bigint * 60000000 + EXCLUDED.per_minute - 1) / EXCLUDED.per_minute)
                 * EXCLUDED.per_minute / 60)
                 - CASE WHEN least(EXCLUDED.burst::bigint * 1000000, b.tokens
                                   + least(greatest(EXCLUDED.at_us - b.at_us, 0),
                                           (EXCLUDED.burst::bigint * 60000000 + EXCLUDED.per_minute - 1)
                                           / EXCLUDED.per_minute) * EXCLUDED.per_minute / 60) >= 1000000
                        THEN 1000000 ELSE 0 END,
        at_us = greatest(b.at_us, EXCLUDED.at_us), burst = EXCLUDED.burst, per_minute = EXCLUDED.per_minute
    RETURNING b.allowed, b.tokens, b.at_us INTO allowed, tokens, at_us;
    RETURN NEXT;
END
$$;

-- Admission (docs/decisions/0008): the key is 256 random bits, so its hash is a capability: knowing it is
-- knowing the key. Anything but a 32-byte hash matches nothing. The bucket is the key's own ('key:<id>'),
-- with the limit from the key's row.
CREATE FUNCTION weft_admit_api_key(p_key_hash bytea, p_now_us bigint)
RETURNS TABLE (id uuid, tenant_id text, name text, workflow_ids text[], active boolean, rate_burst integer,
               rate_per_minute integer, expired boolean, allowed boolean, tokens bigint, at_us bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF octet_length(p_key_hash) IS DISTINCT FROM 32 THEN
        RETURN;
    END IF;
    SELECT k.id, k.tenant_id, k.name, k.workflow_ids::text[], k.active, k.rate_burst, k.rate_per_minute,
           k.expires_at IS NOT NULL AND k.expires_at <= coalesce(to_timestamp(p_now_us / 1e6), clock_timestamp())
      INTO id, tenant_id, name, workflow_ids, active, rate_burst, rate_per_minute, expired
      FROM public.api_keys k WHERE k.key_hash = p_key_hash;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT t.allowed, t.tokens, t.at_us INTO allowed, tokens, at_us
      FROM public.weft_take_rate_token('key:' || id::text, tenant_id, rate_burst, rate_per_minute, p_now_us) t;
    RETURN NEXT;
END
$$;

-- A missing bucket starts full, so deleting one that is full again changes nothing for its client; the
-- count is all it returns. A request racing the delete either refreshes the row first (the DELETE re-checks
-- it and keeps it) or inserts anew.
CREATE FUNCTION weft_sweep_rate_buckets(p_now_us bigint) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM public.rate_buckets
        WHERE at_us + (burst::bigint * 60000000 + per_minute - 1) / per_minute
              < coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
        RETURNING 1)
    SELECT count(*) FROM gone
$$;

-- A count and nothing else: the weft_webhook_dead_letters gauge of every notifier (an app login).
CREATE FUNCTION weft_count_dead_letters() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM public.webhook_dead_letters WHERE replayed_at IS NULL
$$;

REVOKE ALL ON FUNCTION weft_take_rate_token(text, text, integer, integer, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION weft_admit_api_key(bytea, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION weft_sweep_rate_buckets(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION weft_take_rate_token(text, text, integer, integer, bigint) TO weft_app;
GRANT EXECUTE ON FUNCTION weft_admit_api_key(bytea, bigint) TO weft_app;
GRANT EXECUTE ON FUNCTION weft_sweep_rate_buckets(bigint) TO weft_app;
REVOKE ALL ON FUNCTION weft_count_dead_letters() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION weft_count_dead_letters() TO weft_app;

-- Hand the functions to weft_lookup. ALTER ... OWNER asks a non-superuser migrator to be able to SET ROLE
-- weft_lookup and weft_lookup to have CREATE on the schema; CREATE is granted only for these statements.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT weft_lookup TO %I', current_user);
    END IF;
END;
$$;
GRANT CREATE ON SCHEMA public TO weft_lookup;
ALTER FUNCTION weft_take_rate_token(text, text, integer, integer, bigint) OWNER TO weft_lookup;
ALTER FUNCTION weft_admit_api_key(bytea, bigint) OWNER TO weft_lookup;
ALTER FUNCTION weft_sweep_rate_buckets(bigint) OWNER TO weft_lookup;
ALTER FUNCTION weft_count_dead_letters() OWNER TO weft_lookup;
REVOKE CREATE ON SCHEMA public FROM weft_lookup;

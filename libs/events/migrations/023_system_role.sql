-- weft_system: the role of the processes that must read across tenants (relay, scheduler, the executor's
-- recovery, projection rebuilds, the gateway's API-key admission). BYPASSRLS, data rights only: it owns
-- nothing, so it cannot ALTER or DROP a table, and like weft_app it may not UPDATE or DELETE events (the
-- log is append-only for everyone but the owner). NOLOGIN: a migration cannot hold a password, so the
-- operator creates logins that are members of it and connect with ?role=weft_system (BYPASSRLS is an
-- attribute of the current role, never inherited through membership: the session must *be* weft_system).
-- Only the migration Job logs in as the owner (docs/operations.md, "Database roles").
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'weft_system') THEN
        CREATE ROLE weft_system NOLOGIN BYPASSRLS;
    END IF;
END;
$$;
-- Pinned even if an operator made the role first: these are the attributes everything here relies on.
ALTER ROLE weft_system NOLOGIN BYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE;

-- Members of weft_system may still SET ROLE weft_app for tenant transactions (libs/events/db.py).
GRANT weft_app TO weft_system;
GRANT USAGE ON SCHEMA public TO weft_system;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO weft_system;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO weft_system;
REVOKE UPDATE, DELETE ON events FROM weft_system;
REVOKE ALL ON schema_migrations FROM weft_system;
-- Tables that later migrations create (run by the same owner) get the same rights without a GRANT each.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO weft_system;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO weft_system;

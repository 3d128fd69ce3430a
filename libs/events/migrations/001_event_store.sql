-- The append-only event log, the record of processed commands, and reader checkpoints.
CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    stream_id       text        NOT NULL,
    version         integer     NOT NULL CHECK (version >= 1),
    type            text        NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    tenant_id       text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, version)
);
CREATE INDEX events_tenant_stream ON events (tenant_id, stream_id, version);

-- Append-only is the database's rule, not a convention: no role may rewrite history.
CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

-- A command id is recorded in the same transaction as the events it produced (or alone, when refused),
-- so a redelivered command appends nothing and its recorded outcome is returned.
CREATE TABLE processed_commands (
    command_id  uuid PRIMARY KEY,
    tenant_id   text        NOT NULL,
    outcome     jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Position of each global-order reader (relay, async projections), advanced in the reader's own transaction.
CREATE TABLE checkpoints (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);

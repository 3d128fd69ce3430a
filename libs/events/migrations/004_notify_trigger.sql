-- Wake global-order readers (relay) when events commit: one NOTIFY per inserting statement, delivered at
-- commit, so appends need no extra round trip for it. NOTIFY is only a wake-up; readers also poll.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('weft_events', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- Durable timers and schedules (docs/decisions/0007). Tenant tables under the same forced row-level
-- security as every other (003): weft_app sees only the transaction's tenant. The scheduler reads across
-- tenants as the owning role (BYPASSRLS in production), as the relay does.

-- A timer is a command to publish at due_at, inserted in the same transaction as the event that calls for
-- it (EventStore.append(timers=...)). The scheduler publishes it once with Nats-Msg-Id = command_id, then
-- marks it fired; cancelled timers never fire. Rows stay as the record of what fired when.
CREATE TABLE timers (
    timer_id     uuid        PRIMARY KEY,
    tenant_id    text        NOT NULL,
    due_at       timestamptz NOT NULL,
    service      text        NOT NULL,
    command_type text        NOT NULL,
    command_id   uuid        NOT NULL,
    envelope     jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fired', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    fired_at     timestamptz
);
-- The firing loop's only question: the earliest pending due time, and the pending timers due by now.
CREATE INDEX timers_pending_due ON timers (due_at) WHERE status = 'pending';

-- Schedules read model (libs/readmodels/schedules.py), written inline with the schedule events.
-- `state` is the schedule folded from its events (libs/domain/schedule_state.py) at stream_version: the
-- scheduler decides from it rather than re-reading a stream that grows with every occurrence. next_run_at
-- is the first occurrence after cursor_at (the last occurrence handled, or when the cron, time zone or
-- enabled flag last changed); NULL when disabled or paused. Deleted schedules leave the table.
CREATE TABLE schedules (
    id                      uuid        PRIMARY KEY,
    tenant_id               text        NOT NULL,
    workflow_id             uuid        NOT NULL,
    cron_expression         text        NOT NULL,
    timezone                text        NOT NULL,
    inputs                  jsonb       NOT NULL,
    missed_execution_policy text        NOT NULL,
    overlap_policy          text        NOT NULL,
    max_queued              integer     NOT NULL,
    pause_after_failures    integer     NOT NULL,
    enabled                 boolean     NOT NULL,
    paused_reason           text,
    source                  text        NOT NULL,
    cursor_at               timestamptz NOT NULL,
    next_run_at             timestamptz,
    last_run_at             timestamptz,
    last_run_id             uuid,
    consecutive_failures    integer     NOT NULL DEFAULT 0,
    active_runs             integer     NOT NULL DEFAULT 0,
    pending_count           integer     NOT NULL DEFAULT 0,
    created_by              text        NOT NULL,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    stream_version          integer     NOT NULL,
    state                   jsonb       NOT NULL
);
CREATE INDEX schedules_tenant_workflow ON schedules (tenant_id, workflow_id, created_at);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;

-- Every occurrence's fate, one row per occurrence event: fired (with its run), skipped (reason), missed (a
-- window the scheduler was not running for, with what the policy did), or waiting (buffered / queued) until
-- it fires or is skipped. A window row covers (after_at, through_at]; its first occurrence is occurrence_at.
CREATE TABLE schedule_occurrences (
    schedule_id     uuid        NOT NULL,
    seq             integer     NOT NULL,   -- the schedule stream version of the event that recorded it
    tenant_id       text        NOT NULL,
    workflow_id     uuid        NOT NULL,
    occurrence_at   timestamptz NOT NULL,
    after_at        timestamptz,
    through_at      timestamptz,
    last_at         timestamptz,
    cron_expression text,
    timezone        text,
    status          text        NOT NULL,
    reason          text,
    detail          text,
    trigger         text,
    policy          text,
    run_id          uuid,
    run_status      text,
    recorded_at     timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (schedule_id, seq)
);
CREATE INDEX schedule_occurrences_time ON schedule_occurrences (schedule_id, occurrence_at DESC);
CREATE INDEX schedule_occurrences_run ON schedule_occurrences (run_id) WHERE run_id IS NOT NULL;

GRANT SELECT, INSERT, UPDATE ON timers TO weft_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON schedules, schedule_occurrences TO weft_app;
ALTER TABLE timers ENABLE ROW LEVEL SECURITY;
ALTER TABLE timers FORCE ROW LEVEL SECURITY;
ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedules FORCE ROW LEVEL SECURITY;
ALTER TABLE schedule_occurrences ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedule_occurrences FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON timers
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON schedules
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON schedule_occurrences
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

-- Wake the scheduler when a timer is set or moved, or a schedule's next run time changes: one NOTIFY per
-- statement, delivered at commit. Marking a timer fired changes neither column, so the firing loop does not
-- wake itself. NOTIFY is only a wake-up; the scheduler also polls.
CREATE FUNCTION timers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('weft_timers', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER timers_notify AFTER INSERT OR UPDATE OF due_at ON timers
    FOR EACH STATEMENT EXECUTE FUNCTION timers_notify();

CREATE FUNCTION schedules_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('weft_schedules', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER schedules_notify AFTER INSERT OR UPDATE OF next_run_at ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION schedules_notify();

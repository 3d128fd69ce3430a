-- Outbound webhooks (spec D; docs/decisions/0010). Not event-sourced: the run events are the domain facts;
-- these tables are the notifier's durable work queue and delivery log, written in the notifier's own
-- transactions. Every table is a tenant table under forced row-level security, as 003 and 007.

-- Where to send. api_key_id NULL: the tenant's endpoint (every run of the tenant); set: only runs started
-- with that API key (actor "api_key:<id>"). No foreign key to api_keys (009): migrations stay independent.
CREATE TABLE webhook_endpoints (
    id                   uuid        PRIMARY KEY,
    tenant_id            text        NOT NULL,
    api_key_id           uuid,
    url                  text        NOT NULL,
    events               text[]      NOT NULL,
    secret               text        NOT NULL,
    owner_email          text,
    enabled              boolean     NOT NULL DEFAULT true,
    -- Dead-lettered deliveries in a row (a delivered one resets it); at WEFT_WEBHOOK_DISABLE_AFTER the
    -- endpoint is disabled and its owner emailed (owner_notified_at marks the mail as sent).
    consecutive_failures integer     NOT NULL DEFAULT 0,
    disabled_at          timestamptz,
    disabled_reason      text,
    owner_notified_at    timestamptz,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at);

-- The notifier's record that it turned one run event into deliveries. Inserted in the same transaction as
-- those deliveries, so a redelivered event (a crash before the ack) finds it and makes none again.
CREATE TABLE webhook_event_intake (
    event_id     uuid        PRIMARY KEY,
    tenant_id    text        NOT NULL,
    deliveries   integer     NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One message to one endpoint. id = uuid5(event id, endpoint id): the webhook-id header, the same on every
-- attempt, after a crash and on a replay, so a receiver that honours it applies the message once.
-- payload holds the exact body bytes that are signed and sent on every attempt.
CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    event           text        NOT NULL,
    execution_id    uuid        NOT NULL,
    payload         text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- Attempts made before the current round: a replay starts a new round of 1 + 3 retries.
    round_start     integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    CONSTRAINT webhook_deliveries_event_endpoint UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, created_at DESC);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);

-- Every attempt: its HTTP status (NULL when no response came), latency and error. The primary key makes
-- recording an attempt idempotent: two senders of the same attempt (a lease that ran out) record it once.
CREATE TABLE webhook_attempts (
    delivery_id   uuid        NOT NULL,
    attempt       integer     NOT NULL,
    tenant_id     text        NOT NULL,
    started_at    timestamptz NOT NULL,
    status_code   integer,
    latency_ms    double precision NOT NULL,
    error         text,
    response_body text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Deliveries that failed their last retry (or met a disabled endpoint), kept for review and replay.
CREATE TABLE webhook_dead_letters (
    delivery_id uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL,
    endpoint_id uuid        NOT NULL,
    reason      text        NOT NULL,
    dead_at     timestamptz NOT NULL,
    replayed_at timestamptz,
    replays     integer     NOT NULL DEFAULT 0
);
CREATE INDEX webhook_dead_letters_tenant ON webhook_dead_letters (tenant_id, dead_at DESC);

GRANT SELECT, INSERT, UPDATE, DELETE
    ON webhook_endpoints, webhook_event_intake, webhook_deliveries, webhook_attempts, webhook_dead_letters
    TO weft_app;

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_event_intake ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_event_intake FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_dead_letters FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON webhook_endpoints
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON webhook_event_intake
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON webhook_deliveries
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON webhook_attempts
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON webhook_dead_letters
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

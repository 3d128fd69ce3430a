-- Read models maintained inline by projections (libs/events/projections), rebuildable from the log.
CREATE TABLE workflows (
    id             uuid PRIMARY KEY,
    tenant_id      text        NOT NULL,
    name           text        NOT NULL,
    description    text,
    definition     jsonb       NOT NULL,
    version        text        NOT NULL,
    status         text        NOT NULL,
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    stream_version integer     NOT NULL,
    -- The duplicate-name rule (409) is enforced here, inside the append transaction.
    CONSTRAINT workflows_tenant_name UNIQUE (tenant_id, name)
);
CREATE INDEX workflows_tenant_created ON workflows (tenant_id, created_at DESC);

CREATE TABLE runs (
    id             uuid PRIMARY KEY,
    tenant_id      text        NOT NULL,
    workflow_id    uuid        NOT NULL,
    status         text        NOT NULL,
    inputs         jsonb       NOT NULL,
    outputs        jsonb,
    error          text,
    steps          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    stream_version integer     NOT NULL
);
CREATE INDEX runs_tenant_workflow_started ON runs (tenant_id, workflow_id, started_at DESC);

-- The gateway's record of Idempotency-Key responses: the same key returns the same response.
CREATE TABLE idempotency_keys (
    tenant_id       text        NOT NULL,
    actor           text        NOT NULL,
    key             text        NOT NULL,
    request_hash    text        NOT NULL,
    command_id      uuid        NOT NULL,
    response_status integer     NOT NULL,
    response_body   jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, actor, key)
);

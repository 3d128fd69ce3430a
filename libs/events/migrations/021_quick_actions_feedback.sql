-- The assistant's quick actions, favorites, preferences and feedback (spec A). The gateway owns these tables;
-- they are a user's settings and remarks, not event-sourced (like api_keys, DESIGN section 1). Usage counts
-- are not stored: they are counted from the history read model (history.action_id).

-- Tenant-defined quick actions; the built-in catalogue lives in code (services/gateway/core/quick_actions.py).
CREATE TABLE quick_actions (
    tenant_id   text        NOT NULL,
    id          text        NOT NULL,
    title       text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    template    text        NOT NULL,
    icon        text        NOT NULL,
    category    text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id)
);

-- At most 20 per user: adding the 21st deletes the oldest in the same transaction (core/quick_actions.py).
CREATE TABLE quick_action_favorites (
    tenant_id text        NOT NULL,
    user_id   text        NOT NULL,
    action_id text        NOT NULL,
    added_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, user_id, action_id)
);

CREATE TABLE user_preferences (
    tenant_id             text    NOT NULL,
    user_id               text    NOT NULL,
    theme                 text    NOT NULL DEFAULT 'system' CHECK (theme IN ('system', 'light', 'dark')),
    notifications_enabled boolean NOT NULL DEFAULT true,
    default_view          text    NOT NULL DEFAULT 'dashboard',
    PRIMARY KEY (tenant_id, user_id)
);

-- One rating per user, workflow and result (a second one replaces the first).
CREATE TABLE feedback (
    id          uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL,
    user_id     text        NOT NULL,
    workflow_id uuid        NOT NULL,
    result_id   text,
    rating      text        NOT NULL CHECK (rating IN ('positive', 'negative')),
    comment     text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX feedback_one_per_result ON feedback (tenant_id, user_id, workflow_id, (coalesce(result_id, '')));

GRANT SELECT, INSERT, UPDATE, DELETE ON quick_actions, quick_action_favorites, user_preferences, feedback TO weft_app;
ALTER TABLE quick_actions ENABLE ROW LEVEL SECURITY;
ALTER TABLE quick_actions FORCE ROW LEVEL SECURITY;
ALTER TABLE quick_action_favorites ENABLE ROW LEVEL SECURITY;
ALTER TABLE quick_action_favorites FORCE ROW LEVEL SECURITY;
ALTER TABLE user_preferences ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_preferences FORCE ROW LEVEL SECURITY;
ALTER TABLE feedback ENABLE ROW LEVEL SECURITY;
ALTER TABLE feedback FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON quick_actions
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON quick_action_favorites
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON user_preferences
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));
CREATE POLICY tenant_isolation ON feedback
    USING (tenant_id = current_setting('weft.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('weft.tenant_id', true));

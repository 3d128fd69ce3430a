-- Per-run ownership for executor replicas (docs/decisions/0110): the replica whose driver holds a run's
-- lease is the only one that drives it. A live driver renews its lease every third of its time; a dead
-- replica's leases expire and another replica's sweep takes the runs over. The row is deleted when the
-- driver ends, so an idle (paused or finished) run holds no lease. A system table read across tenants by
-- the executor's system login (weft_system gets its rights by 023's default privileges), never by weft_app.
CREATE TABLE run_leases (
    run_id     uuid        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX run_leases_expiry ON run_leases (expires_at);
-- Explicit as well, for databases where 023's default privileges were set by another role.
GRANT SELECT, INSERT, UPDATE, DELETE ON run_leases TO weft_system;
-- Every executor sweeps for orphaned runs every third of a lease: keep that a scan of unfinished runs only.
CREATE INDEX runs_unfinished ON runs (started_at) WHERE status IN ('pending', 'running', 'awaiting_approval');

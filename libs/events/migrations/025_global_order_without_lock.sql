-- Global order without the append lock (docs/decisions/0032): every event records the id of the transaction
-- that wrote it. Readers of the global order read (xid, global_position) pairs below the oldest transaction
-- still running (pg_snapshot_xmin), so an event that commits late is never behind a reader's cursor.
-- Existing rows were written under the lock, in commit order: they get xid 0, so they sort first and keep
-- their position order. The column is added with a constant default (no rewrite, no UPDATE: the table is
-- append-only), then every new row takes its writer's transaction id.
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX events_xid_position ON events (xid, global_position);

-- Run numbers per workflow came from max(run_number) + 1, safe only while appends were serialised: a counter on
-- the workflow row now (libs/readmodels/runs.py), its UPDATE waits for a concurrent one. Backfilled from the runs.
ALTER TABLE workflows ADD COLUMN last_run_number integer NOT NULL DEFAULT 0;
UPDATE workflows w SET last_run_number = r.n
    FROM (SELECT workflow_id, max(run_number) AS n FROM runs GROUP BY workflow_id) r WHERE r.workflow_id = w.id;

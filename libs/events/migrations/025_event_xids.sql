-- Global order without the append lock (docs/decisions/0032): every event records the id of the transaction
-- that wrote it. Readers of the global order read (xid, global_position) pairs below the oldest transaction
-- still running (pg_snapshot_xmin), so an event that commits late is never behind a reader's cursor.
-- Existing rows were written under the lock, in commit order: they get xid 0, so they sort first and keep
-- their position order. The column is added with a constant default (no rewrite, no UPDATE: the table is
-- append-only), then every new row takes its writer's transaction id.
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX events_xid_position ON events (xid, global_position);

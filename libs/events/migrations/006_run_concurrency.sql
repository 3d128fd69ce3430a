-- One active run per workflow unless its definition says `"concurrency": "unlimited"`: enforced by the
-- database inside the append transaction (the runs projection inserts the row), so two concurrent
-- executes cannot both start. The losing StartRun becomes a 409.
ALTER TABLE runs ADD COLUMN exclusive boolean NOT NULL DEFAULT true;
CREATE UNIQUE INDEX runs_one_active_per_workflow ON runs (workflow_id)
    WHERE exclusive AND status IN ('pending', 'running', 'awaiting_approval');

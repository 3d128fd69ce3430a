-- A workflow's runs page (core/runs.py list_page: newest first by start time, id breaking ties, optionally one
-- status) is chosen from this index alone, an index-only scan: a deep offset skips index entries instead of
-- reading and sorting every run of the workflow, and the total is counted without reading the table
-- (docs/decisions/0036). It covers the index it replaces (same leading columns).
CREATE INDEX runs_tenant_workflow_page ON runs (tenant_id, workflow_id, started_at DESC, id) INCLUDE (status);
DROP INDEX runs_tenant_workflow_started;

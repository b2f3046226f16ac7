-- Imprint local store, schema version 17: releasing a quarantined record
-- (issue 11: supervisors release quarantined records). A release is kept on
-- the quarantine row, which stays as the history of the conflict: who
-- released it, when, and why. Releasing queues the record again (a new
-- outbox row, in the same transaction) and appends a `quarantine_released`
-- audit entry; if the conflict still stands, the next round quarantines it
-- again, as a new row.
-- Never edit an applied migration: add a new numbered file.
ALTER TABLE sync_quarantine ADD COLUMN released_at TEXT;
ALTER TABLE sync_quarantine ADD COLUMN released_by TEXT;
ALTER TABLE sync_quarantine ADD COLUMN release_comment TEXT;
CREATE INDEX sync_quarantine_open ON sync_quarantine(entity_id, entity, step_no) WHERE released_at IS NULL;

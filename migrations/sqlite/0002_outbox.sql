-- Imprint local store, schema version 2: the sync outbox.
-- Every change to a record (attempt, step, certificate) inserts an outbox row
-- in the same transaction as the change (imprint-store, records.rs), so a
-- record can never change without the sync worker learning of it.
-- Never edit an applied migration: add a new numbered file.

CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY,           -- order of changes; the record version sent to the center
    entity     TEXT NOT NULL CHECK (entity IN ('attempt', 'step', 'certificate')),
    entity_id  TEXT NOT NULL,                 -- attempts.id | certificates.id | steps.attempt_id
    step_no    INTEGER NOT NULL DEFAULT 0,    -- steps.id for entity 'step', else 0
    changed_at TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'synced', 'quarantined')),
    synced_at  TEXT,
    CHECK ((entity = 'step') = (step_no > 0))
) STRICT;
CREATE INDEX outbox_pending ON outbox(seq) WHERE state = 'pending';
CREATE INDEX outbox_by_entity ON outbox(entity_id, entity, step_no, seq);

-- Records whose content conflicts with what the center holds: kept locally,
-- flagged here, reported by `imprint sync status`, never overwritten.
CREATE TABLE sync_quarantine (
    id             INTEGER PRIMARY KEY,
    entity         TEXT NOT NULL,
    entity_id      TEXT NOT NULL,
    step_no        INTEGER NOT NULL DEFAULT 0,
    version        INTEGER NOT NULL,          -- outbox seq of the content that conflicted
    reason         TEXT NOT NULL,
    local_sha256   TEXT NOT NULL,
    central_sha256 TEXT,                      -- NULL: the center holds another record with the same key/serial
    at             TEXT NOT NULL,
    audit_id       TEXT NOT NULL UNIQUE,      -- UUIDv7 of the audit event sent to the center about it
    reported_at    TEXT,                      -- when that audit event reached the center
    UNIQUE (entity, entity_id, step_no, version)
) STRICT;

-- A station upgraded with history queues it: everything recorded before
-- this migration is synced too.
INSERT INTO outbox(entity, entity_id, changed_at)
    SELECT 'attempt', id, coalesce(finished_at, started_at) FROM attempts ORDER BY started_at, id;
INSERT INTO outbox(entity, entity_id, changed_at)
    SELECT 'certificate', id, coalesce(issued_at, created_at) FROM certificates ORDER BY created_at, id;
INSERT INTO outbox(entity, entity_id, step_no, changed_at)
    SELECT 'step', attempt_id, id, at FROM steps ORDER BY id;

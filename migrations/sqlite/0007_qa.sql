-- Imprint local store, schema version 7: QA verdicts (docs/lifecycle.md,
-- "QA verification"). Version 6 is the revocations' migration.
-- A verdict is written once, with its outbox row and its `qa_verdict` audit
-- entry (anchoring it) in the same transaction, and never changes.

CREATE TABLE qa_verdicts (
    id              TEXT PRIMARY KEY,          -- UUIDv7
    at              TEXT NOT NULL,             -- RFC 3339 UTC
    operator        TEXT,                      -- who verified
    port            TEXT NOT NULL,
    device_serial   TEXT NOT NULL,
    cert_serial_hex TEXT,                      -- the certificate read from the device; NULL: it holds none
    certificate_id  TEXT,                      -- the store's record of that certificate, if any
    batch           TEXT,                      -- the work order of the attempt that issued it
    verdict         TEXT NOT NULL,             -- pass | fail
    checks          TEXT NOT NULL              -- JSON [{"check": ..., "result": pass|fail|skipped, "detail": ...}]
) STRICT;

CREATE INDEX qa_verdicts_by_device ON qa_verdicts(device_serial, at);
CREATE INDEX qa_verdicts_by_batch ON qa_verdicts(batch, device_serial);

CREATE TRIGGER qa_verdicts_never_change BEFORE UPDATE ON qa_verdicts
BEGIN
    SELECT RAISE(ABORT, 'a QA verdict never changes');
END;
CREATE TRIGGER qa_verdicts_never_deleted BEFORE DELETE ON qa_verdicts
BEGIN
    SELECT RAISE(ABORT, 'a QA verdict is never deleted');
END;

-- The outbox learns the new synced kind: SQLite cannot alter a CHECK, so the
-- table is rebuilt with the same rows and seqs ('revocation' is the kind of
-- migration 6, listed so either order of the two leaves both allowed).
CREATE TABLE outbox_v7 (
    seq        INTEGER PRIMARY KEY,
    entity     TEXT NOT NULL CHECK (entity IN ('attempt', 'step', 'certificate', 'audit', 'revocation', 'qa_verdict')),
    entity_id  TEXT NOT NULL,                 -- attempts.id | certificates.id | steps.attempt_id | audit.id | qa_verdicts.id
    step_no    INTEGER NOT NULL DEFAULT 0,
    changed_at TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'synced', 'quarantined')),
    synced_at  TEXT,
    CHECK ((entity = 'step') = (step_no > 0))
) STRICT;
INSERT INTO outbox_v7(seq, entity, entity_id, step_no, changed_at, state, synced_at)
    SELECT seq, entity, entity_id, step_no, changed_at, state, synced_at FROM outbox ORDER BY seq;
DROP TABLE outbox;
ALTER TABLE outbox_v7 RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox(seq) WHERE state = 'pending';
CREATE INDEX outbox_by_entity ON outbox(entity_id, entity, step_no, seq);

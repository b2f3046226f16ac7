-- Imprint local store, schema version 5: the audit trail, a hash chain.
-- Appended only through imprint-store (audit.rs), by the writer thread, in the
-- same transaction as the change it records (a provisioning outcome commits
-- with the attempt's finish). Each entry's `hash` is SHA-256 over a canonical
-- encoding of all its fields, `prev_hash` included (docs/audit.md); the first
-- entry's prev_hash is 64 zeros. `anchors` pins the content hashes of the
-- records the entry is about, so a record edited later is found by
-- `imprint audit verify`. Every entry has its outbox row (entity 'audit').
-- Never edit an applied migration: add a new numbered file.

CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,          -- 1, 2, 3, ... no gaps
    id         TEXT NOT NULL UNIQUE,         -- UUIDv7, the idempotency key at the center
    at         TEXT NOT NULL,                -- RFC 3339 UTC, as other tables
    station_id TEXT NOT NULL,
    operator   TEXT,                         -- operator id, NULL: the station itself
    kind       TEXT NOT NULL,                -- imprint_store::audit::AuditKind
    subject    TEXT,                         -- the record it is about (attempt id, ...)
    detail     TEXT NOT NULL,                -- JSON object; never a secret
    anchors    TEXT NOT NULL,                -- JSON [{"table","key","hash"}]
    prev_hash  TEXT NOT NULL,                -- hex; 64 zeros for the first entry
    hash       TEXT NOT NULL                 -- hex SHA-256 of the canonical encoding
) STRICT;
CREATE INDEX audit_by_kind ON audit(kind, seq);
CREATE INDEX audit_by_operator ON audit(operator, seq);

-- Append-only: nothing in Imprint updates or deletes an entry. (Someone with
-- the file can drop these triggers; the chain and the center catch that.)
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: an entry is never updated');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: an entry is never deleted');
END;

-- The outbox learns the new synced kind: SQLite cannot alter a CHECK, so the
-- table is rebuilt with the same rows and seqs.
CREATE TABLE outbox_v5 (
    seq        INTEGER PRIMARY KEY,
    entity     TEXT NOT NULL CHECK (entity IN ('attempt', 'step', 'certificate', 'audit')),
    entity_id  TEXT NOT NULL,                 -- attempts.id | certificates.id | steps.attempt_id | audit.id
    step_no    INTEGER NOT NULL DEFAULT 0,
    changed_at TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'synced', 'quarantined')),
    synced_at  TEXT,
    CHECK ((entity = 'step') = (step_no > 0))
) STRICT;
INSERT INTO outbox_v5(seq, entity, entity_id, step_no, changed_at, state, synced_at)
    SELECT seq, entity, entity_id, step_no, changed_at, state, synced_at FROM outbox ORDER BY seq;
DROP TABLE outbox;
ALTER TABLE outbox_v5 RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox(seq) WHERE state = 'pending';
CREATE INDEX outbox_by_entity ON outbox(entity_id, entity, step_no, seq);

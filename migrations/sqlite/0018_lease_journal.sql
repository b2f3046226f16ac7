-- Imprint local store, schema version 18: the station's lease journal
-- (docs/work-orders.md#the-lease-journal, issue 13: "leases, consumption and
-- returns sync like every other record and are audited"). Versions 15 and 16
-- are unused; 17 is the quarantine release.
--
-- Every lease event of this station is one row, written in the same
-- transaction as the change of its `work_order_leases` row, with its outbox
-- row: the request recorded before the center is asked (`asked`), the
-- center's answer (`granted`, or `refused` when it granted nothing), each
-- use the center acknowledged (`reported`: the count the center holds), and
-- the settlement with the final count and what went back (`settled`).
-- Rows are synced record kind `lease_event` (imprint_store::synced::LEASE_EVENTS)
-- to the center's `lease_journal`, where `lease_reconciliation` compares
-- them with the center's own `work_order_leases`. A row is written once and
-- never changes or goes away.

CREATE TABLE lease_journal (
    id            TEXT PRIMARY KEY,      -- UUIDv7 of the event
    lease_id      TEXT NOT NULL,         -- work_order_leases.id (the center's lease id)
    work_order_id TEXT NOT NULL,
    at            TEXT NOT NULL,         -- RFC 3339 UTC
    event         TEXT NOT NULL CHECK (event IN ('asked', 'granted', 'refused', 'reported', 'settled')),
    asked         INTEGER,               -- asked, granted, refused: the size asked for
    granted       INTEGER,               -- granted, settled: the lease's size; refused: 0
    used          INTEGER,               -- reported: the count the center acknowledged; settled: the final count
    returned      INTEGER,               -- settled: granted - used, back to the center
    expires_at    TEXT,                  -- granted: the lease's end
    central_free  INTEGER                -- granted, refused: what the center had left after answering
) STRICT;

CREATE INDEX lease_journal_by_lease ON lease_journal(lease_id, at);

CREATE TRIGGER lease_journal_never_changes BEFORE UPDATE ON lease_journal
BEGIN
    SELECT RAISE(ABORT, 'a lease journal entry never changes');
END;
CREATE TRIGGER lease_journal_never_deleted BEFORE DELETE ON lease_journal
BEGIN
    SELECT RAISE(ABORT, 'a lease journal entry is never deleted');
END;

-- The outbox learns the new synced kind (rebuilt as in migrations 7 and 9).
CREATE TABLE outbox_v18 (
    seq        INTEGER PRIMARY KEY,
    entity     TEXT NOT NULL CHECK (entity IN ('attempt', 'step', 'certificate', 'audit', 'revocation', 'qa_verdict', 'rework_authorisation', 'lease_event')),
    entity_id  TEXT NOT NULL,                 -- attempts.id | certificates.id | steps.attempt_id | audit.id | qa_verdicts.id | rework_authorisations.id | lease_journal.id
    step_no    INTEGER NOT NULL DEFAULT 0,
    changed_at TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'synced', 'quarantined')),
    synced_at  TEXT,
    CHECK ((entity = 'step') = (step_no > 0))
) STRICT;
INSERT INTO outbox_v18(seq, entity, entity_id, step_no, changed_at, state, synced_at)
    SELECT seq, entity, entity_id, step_no, changed_at, state, synced_at FROM outbox ORDER BY seq;
DROP TABLE outbox;
ALTER TABLE outbox_v18 RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox(seq) WHERE state = 'pending';
CREATE INDEX outbox_by_entity ON outbox(entity_id, entity, step_no, seq);

-- Leases granted before this version have no journal yet: one `granted`
-- entry each (a random UUID: these ids are not time-ordered) (and `settled` for settled ones), so the center's
-- reconciliation finds every lease of this station in its journal.
INSERT INTO lease_journal(id, lease_id, work_order_id, at, event, asked, granted, expires_at)
    SELECT lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-'
               || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))),
           id, work_order_id, coalesce(granted_at, asked_at), 'granted', asked, granted, expires_at
    FROM work_order_leases WHERE granted IS NOT NULL;
INSERT INTO lease_journal(id, lease_id, work_order_id, at, event, granted, used, returned)
    SELECT lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-'
               || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))),
           id, work_order_id, settled_at, 'settled', granted, used, returned
    FROM work_order_leases WHERE status = 'settled';
INSERT INTO outbox(entity, entity_id, changed_at)
    SELECT 'lease_event', id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM lease_journal ORDER BY lease_id, event;

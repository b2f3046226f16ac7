-- Imprint local store, schema version 11: work orders with enforced quotas
-- (docs/work-orders.md, issue 13). Versions 9 and 10 belong to other
-- features; this migration touches no table of theirs.
--
-- `issued` counts the certificates journaled for the work order. It is
-- raised in the same transaction that inserts the certificate's `signing`
-- row (Store::journal_intent), and only while issued < quantity, so a crash
-- leaves both or neither. A resumed device (same key) journals nothing and
-- so counts nothing.

CREATE TABLE work_orders (
    id          TEXT PRIMARY KEY,              -- what a WO:<id> scan names
    product     TEXT NOT NULL,                 -- the product / profile it is for
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    issued      INTEGER NOT NULL DEFAULT 0 CHECK (issued >= 0 AND issued <= quantity),
    valid_from  TEXT,                          -- RFC 3339 UTC; NULL: from creation
    valid_until TEXT,                          -- RFC 3339 UTC; NULL: open-ended
    status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  TEXT NOT NULL,
    created_by  TEXT,
    closed_at   TEXT,
    closed_by   TEXT
) STRICT;

CREATE TRIGGER work_orders_closed_is_final BEFORE UPDATE ON work_orders
WHEN OLD.status = 'closed' AND (NEW.status <> 'closed' OR NEW.issued <> OLD.issued)
BEGIN
    SELECT RAISE(ABORT, 'a closed work order stays closed and issues nothing');
END;

CREATE TRIGGER work_orders_issued_never_goes_down BEFORE UPDATE OF issued ON work_orders
WHEN NEW.issued < OLD.issued
BEGIN
    SELECT RAISE(ABORT, 'a work order''s issued count never goes down');
END;

-- Certificates per work order (the overproduction check joins through the attempt).
CREATE INDEX IF NOT EXISTS attempts_by_batch ON attempts(batch);
CREATE INDEX IF NOT EXISTS certificates_by_attempt ON certificates(attempt_id);

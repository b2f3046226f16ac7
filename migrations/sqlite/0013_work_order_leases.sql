-- Imprint local store, schema version 13: work orders from the center and
-- this station's leases of their quantity (docs/work-orders.md, issue 13
-- step 3, the station's half). Version 12 belongs to reports; nothing here
-- touches its indexes.
--
-- With [central] on, the sync worker copies the center's work orders here
-- (`central = 1`) and leases blocks of their quantity. A certificate is
-- journaled under a central work order only against an active, unexpired
-- lease with quantity left: `used` is raised in the same transaction as the
-- certificate's `signing` row (Store::journal_intent), so offline the
-- station issues exactly what it holds and not one more.
--
-- A lease row is written (status `asked`, its UUID chosen here) before the
-- center is asked, so asking again after a lost reply or a kill -9 returns
-- the same lease. It is `settling` from the moment the station stops using
-- it (expired, or its work order closed): `used` is final then, and the
-- station reports it to the center, which takes back the rest (`settled`).

ALTER TABLE work_orders ADD COLUMN central INTEGER NOT NULL DEFAULT 0 CHECK (central IN (0, 1));
-- What the center last said was free (quantity - consumed - leased), and when.
ALTER TABLE work_orders ADD COLUMN central_free INTEGER;
ALTER TABLE work_orders ADD COLUMN central_seen_at TEXT;

CREATE TABLE work_order_leases (
    id            TEXT PRIMARY KEY,               -- UUIDv7 chosen before asking
    work_order_id TEXT NOT NULL REFERENCES work_orders(id),
    asked         INTEGER NOT NULL CHECK (asked > 0),
    granted       INTEGER CHECK (granted > 0),    -- NULL until the center answers
    used          INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= coalesce(granted, 0)),
    reported_used INTEGER NOT NULL DEFAULT 0 CHECK (reported_used >= 0 AND reported_used <= used),
    returned      INTEGER CHECK (returned >= 0),  -- set when settled
    status        TEXT NOT NULL CHECK (status IN ('asked', 'active', 'settling', 'settled')),
    asked_at      TEXT NOT NULL,
    granted_at    TEXT,
    expires_at    TEXT,                            -- RFC 3339 UTC, fixed width: compared as text
    settled_at    TEXT
) STRICT;

CREATE INDEX work_order_leases_live ON work_order_leases(work_order_id, expires_at) WHERE status = 'active';
CREATE INDEX work_order_leases_open ON work_order_leases(status) WHERE status <> 'settled';

CREATE TRIGGER work_order_leases_used_never_goes_down BEFORE UPDATE OF used ON work_order_leases
WHEN NEW.used < OLD.used OR (OLD.status <> 'active' AND NEW.used <> OLD.used)
BEGIN
    SELECT RAISE(ABORT, 'a lease''s used count only goes up, and only while it is active');
END;

CREATE TRIGGER work_order_leases_settled_is_final BEFORE UPDATE ON work_order_leases
WHEN OLD.status = 'settled'
BEGIN
    SELECT RAISE(ABORT, 'a settled lease does not change');
END;

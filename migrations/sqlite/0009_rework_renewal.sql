-- Imprint local store, schema version 9: rework and renewal
-- (docs/lifecycle.md, "Rework" and "Renewal").
-- Never edit an applied migration: add a new numbered file.
--
-- 1. "One certificate per key" becomes "one CURRENT certificate per key": a
--    renewal certifies the same key again and the old certificate becomes
--    `superseded` (or `revoked` with reason superseded). SQLite cannot alter
--    a column's CHECK or drop an inline UNIQUE, so `certificates` is rebuilt
--    with the same rows (foreign keys are off while migrations run, and
--    checked after: imprint-store `migrate`). Current = `signing` or `issued`:
--    the partial unique index allows exactly one per key.
-- 2. Rework authorisations: a supervisor's permission to re-provision one
--    device serial, single-use and expiring, synced and audited.

CREATE TABLE certificates_v9 (
    id                 TEXT PRIMARY KEY,        -- UUIDv7
    attempt_id         TEXT NOT NULL REFERENCES attempts(id),
    device_serial      TEXT NOT NULL,
    issuer             TEXT NOT NULL,           -- issuer DN (RFC 4514 string)
    serial_hex         TEXT NOT NULL,
    spki_sha256        TEXT NOT NULL,           -- one CURRENT certificate per key (index below)
    spki_der           BLOB NOT NULL,
    not_before         TEXT NOT NULL,
    not_after          TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('signing', 'issued', 'superseded', 'revoked')),
    cert_der           BLOB,
    chain_der          BLOB,
    fingerprint_sha256 TEXT,
    created_at         TEXT NOT NULL,
    issued_at          TEXT,
    revoked_at         TEXT,
    revocation_reason  TEXT,
    revocation_comment TEXT,
    revoked_by         TEXT,
    superseded_at      TEXT,                    -- when a renewal or rework replaced it
    superseded_by      TEXT,                    -- the certificate that replaced it
    UNIQUE (issuer, serial_hex),
    CHECK (status = 'signing' OR cert_der IS NOT NULL)
) STRICT;
INSERT INTO certificates_v9 (id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before, not_after,
                             status, cert_der, chain_der, fingerprint_sha256, created_at, issued_at, revoked_at,
                             revocation_reason, revocation_comment, revoked_by)
    SELECT id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before, not_after,
           status, cert_der, chain_der, fingerprint_sha256, created_at, issued_at, revoked_at,
           revocation_reason, revocation_comment, revoked_by
    FROM certificates ORDER BY created_at, id;
DROP TABLE certificates;
ALTER TABLE certificates_v9 RENAME TO certificates;

CREATE UNIQUE INDEX certificates_one_current_per_key ON certificates(spki_sha256) WHERE status IN ('signing', 'issued');
CREATE INDEX certificates_by_key ON certificates(spki_sha256, created_at);
CREATE INDEX certificates_by_serial ON certificates(device_serial);
CREATE INDEX certificates_by_status ON certificates(status, issuer);

-- A revocation is final (as in migration 6, now also for the supersede columns).
CREATE TRIGGER certificates_revocation_is_final BEFORE UPDATE ON certificates
WHEN OLD.status = 'revoked' AND (NEW.status <> 'revoked'
    OR NEW.revoked_at IS NOT OLD.revoked_at
    OR NEW.revocation_reason IS NOT OLD.revocation_reason
    OR NEW.revocation_comment IS NOT OLD.revocation_comment
    OR NEW.revoked_by IS NOT OLD.revoked_by
    OR NEW.superseded_at IS NOT OLD.superseded_at
    OR NEW.superseded_by IS NOT OLD.superseded_by)
BEGIN
    SELECT RAISE(ABORT, 'a revoked certificate never changes');
END;

-- A superseded certificate is never current again; it may still be revoked.
CREATE TRIGGER certificates_superseded_is_final BEFORE UPDATE ON certificates
WHEN OLD.status = 'superseded' AND (NEW.status NOT IN ('superseded', 'revoked')
    OR NEW.superseded_at IS NOT OLD.superseded_at
    OR NEW.superseded_by IS NOT OLD.superseded_by)
BEGIN
    SELECT RAISE(ABORT, 'a superseded certificate is never current again');
END;

CREATE TABLE rework_authorisations (
    id             TEXT PRIMARY KEY,        -- UUIDv7
    device_serial  TEXT NOT NULL,
    authorised_at  TEXT NOT NULL,           -- RFC 3339 UTC
    authorised_by  TEXT,                    -- the supervisor (operator id)
    expires_at     TEXT NOT NULL,
    comment        TEXT,
    used_at        TEXT,                    -- set once, in the transaction that journals the new certificate
    attempt_id     TEXT,                    -- the attempt that used it
    certificate_id TEXT                     -- the certificate it led to
) STRICT;
CREATE INDEX rework_authorisations_by_serial ON rework_authorisations(device_serial, expires_at);

CREATE TRIGGER rework_authorisations_used_once BEFORE UPDATE ON rework_authorisations
WHEN OLD.used_at IS NOT NULL
    OR NEW.device_serial IS NOT OLD.device_serial
    OR NEW.authorised_at IS NOT OLD.authorised_at
    OR NEW.authorised_by IS NOT OLD.authorised_by
    OR NEW.expires_at IS NOT OLD.expires_at
    OR NEW.comment IS NOT OLD.comment
BEGIN
    SELECT RAISE(ABORT, 'a rework authorisation is used once and otherwise never changes');
END;
CREATE TRIGGER rework_authorisations_never_deleted BEFORE DELETE ON rework_authorisations
BEGIN
    SELECT RAISE(ABORT, 'a rework authorisation is never deleted');
END;

-- The outbox learns the new synced kind (rebuilt as in migration 7).
CREATE TABLE outbox_v9 (
    seq        INTEGER PRIMARY KEY,
    entity     TEXT NOT NULL CHECK (entity IN ('attempt', 'step', 'certificate', 'audit', 'revocation', 'qa_verdict', 'rework_authorisation')),
    entity_id  TEXT NOT NULL,                 -- attempts.id | certificates.id | steps.attempt_id | audit.id | qa_verdicts.id | rework_authorisations.id
    step_no    INTEGER NOT NULL DEFAULT 0,
    changed_at TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'synced', 'quarantined')),
    synced_at  TEXT,
    CHECK ((entity = 'step') = (step_no > 0))
) STRICT;
INSERT INTO outbox_v9(seq, entity, entity_id, step_no, changed_at, state, synced_at)
    SELECT seq, entity, entity_id, step_no, changed_at, state, synced_at FROM outbox ORDER BY seq;
DROP TABLE outbox;
ALTER TABLE outbox_v9 RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox(seq) WHERE state = 'pending';
CREATE INDEX outbox_by_entity ON outbox(entity_id, entity, step_no, seq);

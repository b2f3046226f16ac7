-- Imprint local store, schema version 6: revocation and CRL numbers.
-- A certificate is revoked by imprint-store (revocation.rs) in one transaction
-- with its outbox row and a `revocation` audit entry that anchors the changed
-- row again. A revocation is final: nothing sets a revoked certificate back,
-- and its revocation columns never change (the trigger below; the center has
-- the same rule in migrations/postgres/0004_revocation.sql).
-- Never edit an applied migration: add a new numbered file.

ALTER TABLE certificates ADD COLUMN revoked_at TEXT;          -- RFC 3339 UTC
ALTER TABLE certificates ADD COLUMN revocation_reason TEXT;   -- imprint_core::crl::RevocationReason (snake_case)
ALTER TABLE certificates ADD COLUMN revocation_comment TEXT;  -- the operator's words, bounded
ALTER TABLE certificates ADD COLUMN revoked_by TEXT;          -- operator id

CREATE TRIGGER certificates_revocation_is_final BEFORE UPDATE ON certificates
WHEN OLD.status = 'revoked' AND (NEW.status <> 'revoked'
    OR NEW.revoked_at IS NOT OLD.revoked_at
    OR NEW.revocation_reason IS NOT OLD.revocation_reason
    OR NEW.revocation_comment IS NOT OLD.revocation_comment
    OR NEW.revoked_by IS NOT OLD.revoked_by)
BEGIN
    SELECT RAISE(ABORT, 'a revoked certificate never changes');
END;

CREATE INDEX certificates_by_status ON certificates(status, issuer);

-- The last CRL number this station used per CA (issuer DN). Local only (not
-- synced): `imprint crl generate --central` numbers from the center's counter
-- and moves this one up to it, so a later local CRL never goes backwards.
CREATE TABLE crl_numbers (
    issuer      TEXT PRIMARY KEY,
    last_number INTEGER NOT NULL CHECK (last_number > 0),
    updated_at  TEXT NOT NULL
) STRICT;

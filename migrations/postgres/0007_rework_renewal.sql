-- Imprint central schema, version 7: rework and renewal (docs/lifecycle.md).
-- Applied only by an administrator (`imprint db migrate --url ...`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.

-- "One certificate per key" becomes "one CURRENT certificate per key": a
-- renewal certifies the same key again and the old certificate becomes
-- `superseded` (or `revoked` with reason superseded). A key certified by two
-- current certificates across stations is still refused (the second row is
-- quarantined by its station).
ALTER TABLE certificates DROP CONSTRAINT certificates_status_check;
ALTER TABLE certificates ADD CONSTRAINT certificates_status_check
    CHECK (status IN ('signing', 'issued', 'superseded', 'revoked'));
ALTER TABLE certificates DROP CONSTRAINT certificates_spki_sha256_key;
CREATE UNIQUE INDEX certificates_one_current_per_key ON certificates (spki_sha256) WHERE status IN ('signing', 'issued');
CREATE INDEX certificates_by_key ON certificates (spki_sha256);

-- When a renewal or rework replaced a certificate, and by which
-- (imprint_store::synced::CERTIFICATES, appended as `added`).
ALTER TABLE certificates ADD COLUMN superseded_at timestamptz;
ALTER TABLE certificates ADD COLUMN superseded_by uuid;
GRANT UPDATE (superseded_at, superseded_by) ON certificates TO imprint_station;

-- As version 4, and: a superseded certificate is never current again (it may
-- still be revoked), and its supersede columns are set once.
CREATE OR REPLACE FUNCTION certificates_issued_never_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF OLD.status <> 'signing' AND (NEW.status = 'signing'
            OR NEW.cert_der IS DISTINCT FROM OLD.cert_der
            OR NEW.fingerprint_sha256 IS DISTINCT FROM OLD.fingerprint_sha256
            OR NEW.issued_at IS DISTINCT FROM OLD.issued_at) THEN
        RAISE EXCEPTION 'certificate % is issued: its content never changes at the center', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.status = 'revoked' AND (NEW.status <> 'revoked'
            OR NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
            OR NEW.revocation_reason IS DISTINCT FROM OLD.revocation_reason
            OR NEW.revocation_comment IS DISTINCT FROM OLD.revocation_comment
            OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by
            OR NEW.superseded_at IS DISTINCT FROM OLD.superseded_at
            OR NEW.superseded_by IS DISTINCT FROM OLD.superseded_by) THEN
        RAISE EXCEPTION 'certificate % is revoked: a revocation is final and never changes at the center', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.status = 'superseded' AND (NEW.status NOT IN ('superseded', 'revoked')
            OR NEW.superseded_at IS DISTINCT FROM OLD.superseded_at
            OR NEW.superseded_by IS DISTINCT FROM OLD.superseded_by) THEN
        RAISE EXCEPTION 'certificate % is superseded: it is never current again', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status <> 'revoked' AND (NEW.revoked_at IS NOT NULL OR NEW.revocation_reason IS NOT NULL) THEN
        RAISE EXCEPTION 'certificate %: revocation details without the status revoked', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

-- Rework authorisations (imprint_store::synced::REWORK_AUTHORISATIONS): a
-- supervisor's permission to re-provision one device serial, single-use and
-- expiring. A station inserts its own and sets the use once.
CREATE TABLE rework_authorisations (
    id             uuid PRIMARY KEY,            -- station-generated UUIDv7
    station_id     text NOT NULL,
    device_serial  text NOT NULL,
    authorised_at  timestamptz NOT NULL,
    authorised_by  text,
    expires_at     timestamptz NOT NULL,
    comment        text,
    used_at        timestamptz,
    attempt_id     uuid,
    certificate_id uuid,
    version        bigint NOT NULL,
    content_sha256 bytea NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rework_authorisations_by_serial ON rework_authorisations (device_serial, authorised_at);

CREATE FUNCTION rework_authorisations_used_once() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF OLD.used_at IS NOT NULL AND (NEW.used_at IS DISTINCT FROM OLD.used_at
            OR NEW.attempt_id IS DISTINCT FROM OLD.attempt_id
            OR NEW.certificate_id IS DISTINCT FROM OLD.certificate_id) THEN
        RAISE EXCEPTION 'rework authorisation % was used: it never changes again', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER rework_authorisations_used_once BEFORE UPDATE ON rework_authorisations
    FOR EACH ROW EXECUTE FUNCTION rework_authorisations_used_once();

ALTER TABLE rework_authorisations ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON rework_authorisations TO imprint_station
    USING (station_id = (SELECT imprint_station_id())) WITH CHECK (station_id = (SELECT imprint_station_id()));
CREATE POLICY read_all ON rework_authorisations FOR SELECT TO imprint_reader USING (true);

REVOKE ALL ON rework_authorisations FROM PUBLIC;
GRANT SELECT, INSERT ON rework_authorisations TO imprint_station;
GRANT UPDATE (used_at, attempt_id, certificate_id, version, content_sha256, received_at) ON rework_authorisations TO imprint_station;
GRANT SELECT ON rework_authorisations TO imprint_reader;

-- Imprint central schema, version 4: revocations and CRL numbers.
-- Applied only by an administrator (`imprint db migrate --url ...`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.

-- A certificate's revocation, synced from the station that revoked it
-- (imprint_store::synced::CERTIFICATES, columns appended as `added`).
ALTER TABLE certificates ADD COLUMN revoked_at timestamptz;
ALTER TABLE certificates ADD COLUMN revocation_reason text;
ALTER TABLE certificates ADD COLUMN revocation_comment text;
ALTER TABLE certificates ADD COLUMN revoked_by text;
GRANT UPDATE (revoked_at, revocation_reason, revocation_comment, revoked_by) ON certificates TO imprint_station;
CREATE INDEX certificates_revoked_by_issuer ON certificates (issuer) WHERE status = 'revoked';

-- An issued certificate keeps its DER, fingerprint and issue time and never
-- goes back to `signing` (version 2); a revoked one never changes again: it
-- is never un-revoked and its revocation (time, reason, comment, operator)
-- stays what was first synced. Revocation columns are set only together
-- with the status `revoked`.
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
            OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by) THEN
        RAISE EXCEPTION 'certificate % is revoked: a revocation is final and never changes at the center', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status <> 'revoked' AND (NEW.revoked_at IS NOT NULL OR NEW.revocation_reason IS NOT NULL) THEN
        RAISE EXCEPTION 'certificate %: revocation details without the status revoked', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

-- CRL numbers per CA (issuer DN as the certificates record it), shared by
-- every station: `imprint crl generate --central` takes the next one with
-- next_crl_number(), one atomic UPDATE under the row's lock, so two stations
-- generating at once get two different, increasing numbers. Written only
-- through that function (its owner's rights).
CREATE TABLE crl_numbers (
    issuer      text PRIMARY KEY,
    last_number bigint NOT NULL CHECK (last_number > 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);
ALTER TABLE crl_numbers ENABLE ROW LEVEL SECURITY;

-- The next number: one more than the last, and at least p_at_least (the
-- caller's own last number, so a CRL number never goes backwards for a
-- station that numbered CRLs locally before).
CREATE FUNCTION next_crl_number(p_issuer text, p_at_least bigint) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    INSERT INTO crl_numbers AS n (issuer, last_number, updated_by)
        VALUES (p_issuer, greatest(1, p_at_least), session_user)
    ON CONFLICT (issuer) DO UPDATE
        SET last_number = greatest(n.last_number + 1, p_at_least), updated_at = now(), updated_by = excluded.updated_by
    RETURNING last_number
$$;

-- Every station's revoked certificates of a CA, for its CRL. A CRL is
-- public by nature: serial, time and reason only (no comment, no operator),
-- readable by any station through this function although row-level security
-- shows a station only its own certificates.
CREATE FUNCTION crl_entries(p_issuer text)
    RETURNS TABLE (serial_hex text, revoked_at timestamptz, revocation_reason text, station_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT c.serial_hex, c.revoked_at, c.revocation_reason, c.station_id
    FROM certificates c
    WHERE c.issuer = p_issuer AND c.status = 'revoked'
    ORDER BY c.revoked_at, c.serial_hex
$$;

REVOKE ALL ON crl_numbers FROM PUBLIC;
REVOKE ALL ON FUNCTION next_crl_number(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION crl_entries(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION next_crl_number(text, bigint) TO imprint_station, imprint_reader;
GRANT EXECUTE ON FUNCTION crl_entries(text) TO imprint_station, imprint_reader;
GRANT SELECT ON crl_numbers TO imprint_reader;
CREATE POLICY read_all ON crl_numbers FOR SELECT TO imprint_reader USING (true);

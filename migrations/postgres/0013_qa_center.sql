-- Imprint central schema, version 13: QA asks the center (docs/lifecycle.md,
-- "QA verification"). Applied only by an administrator (`imprint db migrate --url ...`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.
-- (Versions 8, 11 and 12 are unused or other branches'.)

-- What the center holds for the certificate a QA operator read back from a
-- device: the row of its (issuer, serial) and every row certifying its key,
-- from whichever station issued them. Row-level security shows a station only
-- its own certificates; this function runs with its owner's rights, read-only,
-- and returns what identifies the certificate and its status (no DER, no
-- attempt, no operator), so a QA station can confirm a device provisioned by
-- another station and see a revocation made there.
CREATE FUNCTION qa_certificates(p_issuer text, p_serial_hex text, p_spki_sha256 text)
    RETURNS TABLE (station_id text, device_serial text, issuer text, serial_hex text, spki_sha256 text, status text,
                   fingerprint_sha256 text, revoked_at timestamptz, revocation_reason text, superseded_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT c.station_id, c.device_serial, c.issuer, c.serial_hex, c.spki_sha256, c.status,
           c.fingerprint_sha256, c.revoked_at, c.revocation_reason, c.superseded_at
    FROM certificates c
    WHERE (c.issuer = p_issuer AND c.serial_hex = p_serial_hex) OR c.spki_sha256 = p_spki_sha256
    ORDER BY c.created_at, c.serial_hex
$$;

REVOKE ALL ON FUNCTION qa_certificates(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION qa_certificates(text, text, text) TO imprint_station, imprint_reader;

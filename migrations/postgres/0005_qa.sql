-- Imprint central schema, version 5: QA verdicts (imprint_store::synced::QA_VERDICTS).
-- Applied only by an administrator (`imprint db migrate --url ...`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.
-- (Version 4 is the revocations' migration.)

-- Verdicts never change: the station role may INSERT and SELECT its own rows.
CREATE TABLE qa_verdicts (
    id              uuid PRIMARY KEY,          -- station-generated UUIDv7
    station_id      text NOT NULL,
    at              timestamptz NOT NULL,
    operator        text,
    port            text NOT NULL,
    device_serial   text NOT NULL,
    cert_serial_hex text,
    certificate_id  uuid,
    batch           text,
    verdict         text NOT NULL,             -- pass | fail
    checks          text NOT NULL,             -- JSON text exactly as hashed
    version         bigint NOT NULL,
    content_sha256  bytea NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX qa_verdicts_by_device ON qa_verdicts (device_serial, at);
CREATE INDEX qa_verdicts_by_batch ON qa_verdicts (batch, device_serial);

ALTER TABLE qa_verdicts ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON qa_verdicts TO imprint_station
    USING (station_id = (SELECT imprint_station_id())) WITH CHECK (station_id = (SELECT imprint_station_id()));
CREATE POLICY read_all ON qa_verdicts FOR SELECT TO imprint_reader USING (true);

REVOKE ALL ON qa_verdicts FROM PUBLIC;
GRANT SELECT, INSERT ON qa_verdicts TO imprint_station;
GRANT SELECT ON qa_verdicts TO imprint_reader;

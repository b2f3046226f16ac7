-- Imprint central schema, version 1.
-- Applied only by an administrator (`imprint db migrate --url ...`); stations
-- never migrate: they check `_sqlx_migrations` for the version they need.
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.
--
-- Rows come from stations' outboxes. Each station-generated id (UUIDv7) is the
-- idempotency key; `version` is the station's outbox sequence number of the
-- change the row holds; `content_sha256` is the station's hash of that content,
-- compared when a row arrives again. There are no foreign keys between the
-- synced tables: rows arrive in batches in any order, and a quarantined row
-- must not block others. The views join them.

-- Group roles, shared by every database of the cluster: created once.
DO $$
BEGIN
    BEGIN
        CREATE ROLE imprint_station NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE imprint_reader NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

CREATE TABLE stations (
    id           text PRIMARY KEY,
    db_role      name NOT NULL UNIQUE,        -- the login role this station syncs as
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_sync_at timestamptz
);

CREATE TABLE attempts (
    id                uuid PRIMARY KEY,
    station_id        text NOT NULL,
    port              text NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    status            text NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'interrupted')),
    stage             text,
    code              text,
    reason            text,
    hint              text,
    retryable         boolean,
    device_serial     text,
    model             text,
    hw_rev            text,
    fw_version        text,
    fw_hash           text,
    chip_uid          text,
    batch             text,
    spki_sha256       text,
    certificate_id    uuid,
    resumed           boolean NOT NULL,
    bytes_to_device   bigint NOT NULL,
    bytes_from_device bigint NOT NULL,
    version           bigint NOT NULL,
    content_sha256    bytea NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_by_device ON attempts (device_serial);
CREATE INDEX attempts_by_station ON attempts (station_id, started_at);

CREATE TABLE attempt_steps (
    attempt_id     uuid NOT NULL,
    n              bigint NOT NULL,               -- the station's local step number
    station_id     text NOT NULL,
    at             timestamptz NOT NULL,
    stage          text NOT NULL,
    kind           text NOT NULL,
    detail         text NOT NULL,
    version        bigint NOT NULL,
    content_sha256 bytea NOT NULL,
    PRIMARY KEY (attempt_id, n)
);

CREATE TABLE certificates (
    id                 uuid PRIMARY KEY,
    station_id         text NOT NULL,
    attempt_id         uuid NOT NULL,
    device_serial      text NOT NULL,
    issuer             text NOT NULL,
    serial_hex         text NOT NULL,
    spki_sha256        text NOT NULL,
    spki_der           bytea NOT NULL,
    not_before         timestamptz NOT NULL,
    not_after          timestamptz NOT NULL,
    status             text NOT NULL CHECK (status IN ('signing', 'issued', 'revoked')),
    cert_der           bytea,
    fingerprint_sha256 text,
    created_at         timestamptz NOT NULL,
    issued_at          timestamptz,
    version            bigint NOT NULL,
    content_sha256     bytea NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now(),
    -- Faults across stations: a serial issued twice by one CA, a key certified twice
    -- (a replayed CSR or a cloned key). The second row is quarantined by its station.
    UNIQUE (issuer, serial_hex),
    UNIQUE (spki_sha256),
    CHECK (status = 'signing' OR cert_der IS NOT NULL)
);
CREATE INDEX certificates_by_device ON certificates (device_serial);

CREATE TABLE audit_events (
    id         uuid PRIMARY KEY,                -- station-generated UUIDv7
    station_id text NOT NULL,
    at         timestamptz NOT NULL,
    kind       text NOT NULL,                   -- e.g. 'sync_quarantine'
    subject    text,                            -- the record it is about
    detail     jsonb NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_by_station ON audit_events (station_id, at);

-- The station the current login role syncs for (NULL: not a station).
-- Invoker's rights: a station role sees only its own `stations` row.
CREATE FUNCTION imprint_station_id() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT id FROM stations WHERE db_role = current_user $$;

-- Devices: one row per device serial seen anywhere. A serial seen at two
-- stations is flagged, not rejected: rework is legitimate.
CREATE VIEW devices WITH (security_invoker = true) AS
    SELECT device_serial AS serial,
           min(started_at) AS first_seen_at,
           max(started_at) AS last_seen_at,
           array_agg(DISTINCT station_id ORDER BY station_id) AS stations,
           count(*) AS attempts,
           count(*) FILTER (WHERE status = 'passed') AS passed,
           count(DISTINCT station_id) > 1 AS seen_at_several_stations
    FROM attempts
    WHERE device_serial IS NOT NULL
    GROUP BY device_serial;

CREATE VIEW device_flags WITH (security_invoker = true) AS
    SELECT serial, stations, attempts, 'seen at several stations'::text AS flag
    FROM devices WHERE seen_at_several_stations;

-- Least privilege. A station inserts its own rows and reads them back (to
-- verify content hashes); it may update only the columns that change over a
-- record's life, and only while the center's copy still allows it (checked by
-- the sync worker's UPDATE). Readers (supervisors, reports) read everything.
ALTER TABLE stations ENABLE ROW LEVEL SECURITY;
ALTER TABLE attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE attempt_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE certificates ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY own_station ON stations TO imprint_station USING (db_role = current_user);
CREATE POLICY own_rows ON attempts TO imprint_station
    USING (station_id = (SELECT imprint_station_id())) WITH CHECK (station_id = (SELECT imprint_station_id()));
CREATE POLICY own_rows ON attempt_steps TO imprint_station
    USING (station_id = (SELECT imprint_station_id())) WITH CHECK (station_id = (SELECT imprint_station_id()));
CREATE POLICY own_rows ON certificates TO imprint_station
    USING (station_id = (SELECT imprint_station_id())) WITH CHECK (station_id = (SELECT imprint_station_id()));
CREATE POLICY own_rows ON audit_events TO imprint_station
    USING (station_id = (SELECT imprint_station_id())) WITH CHECK (station_id = (SELECT imprint_station_id()));

CREATE POLICY read_all ON stations FOR SELECT TO imprint_reader USING (true);
CREATE POLICY read_all ON attempts FOR SELECT TO imprint_reader USING (true);
CREATE POLICY read_all ON attempt_steps FOR SELECT TO imprint_reader USING (true);
CREATE POLICY read_all ON certificates FOR SELECT TO imprint_reader USING (true);
CREATE POLICY read_all ON audit_events FOR SELECT TO imprint_reader USING (true);

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO imprint_station, imprint_reader;
GRANT SELECT ON _sqlx_migrations TO imprint_station, imprint_reader;
GRANT EXECUTE ON FUNCTION imprint_station_id() TO imprint_station, imprint_reader;

GRANT SELECT ON stations TO imprint_station;
GRANT UPDATE (last_sync_at) ON stations TO imprint_station;
GRANT SELECT, INSERT ON attempts, attempt_steps, certificates, audit_events TO imprint_station;
GRANT UPDATE (finished_at, status, stage, code, reason, hint, retryable, device_serial, model, hw_rev, fw_version,
              fw_hash, chip_uid, spki_sha256, certificate_id, resumed, bytes_to_device, bytes_from_device,
              version, content_sha256, received_at)
    ON attempts TO imprint_station;
GRANT UPDATE (status, cert_der, fingerprint_sha256, issued_at, version, content_sha256, received_at)
    ON certificates TO imprint_station;

GRANT SELECT ON stations, attempts, attempt_steps, certificates, audit_events, devices, device_flags TO imprint_reader;

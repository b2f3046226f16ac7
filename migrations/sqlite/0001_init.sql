-- Imprint local store, schema version 1.
-- Applied by imprint-store in one transaction; PRAGMA user_version records it.
-- Never edit an applied migration: add a new numbered file.

CREATE TABLE station_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per attempt to provision a device on a port.
CREATE TABLE attempts (
    id                TEXT PRIMARY KEY,          -- UUIDv7, station-generated
    port              TEXT NOT NULL,
    started_at        TEXT NOT NULL,             -- RFC 3339 UTC
    finished_at       TEXT,
    status            TEXT NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'interrupted')),
    stage             TEXT,                      -- last stage reached / stage of failure
    code              TEXT,                      -- failure code
    reason            TEXT,                      -- failure reason, operator words
    hint              TEXT,                      -- what to do next
    retryable         INTEGER,
    device_serial     TEXT,
    model             TEXT,
    hw_rev            TEXT,
    fw_version        TEXT,
    fw_hash           TEXT,
    chip_uid          TEXT,
    batch             TEXT,
    spki_sha256       TEXT,
    certificate_id    TEXT REFERENCES certificates(id),
    resumed           INTEGER NOT NULL DEFAULT 0,
    bytes_to_device   INTEGER NOT NULL DEFAULT 0,
    bytes_from_device INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX attempts_by_serial ON attempts(device_serial);
CREATE INDEX attempts_by_status ON attempts(status, started_at);

-- Every step of an attempt, written as it happens.
CREATE TABLE steps (
    id         INTEGER PRIMARY KEY,
    attempt_id TEXT NOT NULL REFERENCES attempts(id),
    at         TEXT NOT NULL,
    stage      TEXT NOT NULL,
    kind       TEXT NOT NULL,                   -- started | completed | retry | info | console | failed
    detail     TEXT NOT NULL
) STRICT;
CREATE INDEX steps_by_attempt ON steps(attempt_id, id);

-- Certificates: a row is journaled with status 'signing' BEFORE the signer
-- is called, and completed to 'issued' with the DER after. The plan columns
-- (serial, validity, key) are enough to re-sign the identical certificate
-- after a crash.
CREATE TABLE certificates (
    id                 TEXT PRIMARY KEY,        -- UUIDv7
    attempt_id         TEXT NOT NULL REFERENCES attempts(id),
    device_serial      TEXT NOT NULL,
    issuer             TEXT NOT NULL,           -- issuer DN (RFC 4514 string)
    serial_hex         TEXT NOT NULL,
    spki_sha256        TEXT NOT NULL UNIQUE,    -- one certificate per key, ever
    spki_der           BLOB NOT NULL,
    not_before         TEXT NOT NULL,
    not_after          TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('signing', 'issued', 'revoked')),
    cert_der           BLOB,
    chain_der          BLOB,
    fingerprint_sha256 TEXT,
    created_at         TEXT NOT NULL,
    issued_at          TEXT,
    UNIQUE (issuer, serial_hex),
    CHECK (status = 'signing' OR cert_der IS NOT NULL)
) STRICT;
CREATE INDEX certificates_by_serial ON certificates(device_serial);

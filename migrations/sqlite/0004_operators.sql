-- Imprint local store, schema version 4: operators and attribution.
-- Operators sign in with an id and a PIN (kept only as an Argon2id PHC
-- string) or a badge (kept only as its SHA-256). Roles are checked by
-- imprint-api's one permission matrix (crates/imprint-api/src/roles.rs).

CREATE TABLE operators (
    id             TEXT PRIMARY KEY,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL,             -- technician | qa | supervisor | admin
    pin_hash       TEXT NOT NULL,             -- Argon2id PHC string, never the PIN
    badge_sha256   TEXT UNIQUE,               -- hex SHA-256 of the badge code, never the code
    enabled        INTEGER NOT NULL DEFAULT 1,
    failed_pins    INTEGER NOT NULL DEFAULT 0,
    locked_until   TEXT,                      -- RFC 3339 UTC; sign-in refused until then
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
) STRICT;

-- Who started the attempt (NULL for attempts recorded before operators existed).
ALTER TABLE attempts ADD COLUMN operator TEXT;

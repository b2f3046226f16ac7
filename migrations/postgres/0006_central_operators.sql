-- Operators managed at the center (issue 11 item 9): admins add, disable,
-- change roles and reset PINs here (`imprint operators --central ...`);
-- every station copies the table into its local store on each sync round,
-- so sign-in works offline and a disabled operator is refused after the
-- next sync. The PIN is kept only as an Argon2id PHC string and the badge
-- as its SHA-256, as on stations. Stations read it; only the owner (the
-- central administrator) writes it; readers do not see it.
CREATE TABLE central_operators (
    id            text PRIMARY KEY,
    display_name  text NOT NULL,
    role          text NOT NULL CHECK (role IN ('technician', 'qa', 'supervisor', 'admin')),
    pin_hash      text NOT NULL,
    badge_sha256  text UNIQUE,
    enabled       boolean NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON central_operators TO imprint_station;

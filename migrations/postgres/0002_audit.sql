-- Imprint central schema, version 2: the stations' audit trails.
-- Applied only by an administrator (`imprint db migrate --url ...`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.
--
-- `audit_events` (version 1) stays as it is: it is written (the sync worker
-- reports each quarantined record there as a `sync_quarantine` event), its
-- rows are notices about a station's sync, unchained and written after the
-- fact, and replacing it would drop what centers already hold. The chained
-- trail is a different thing and gets its own table, `audit_trail`.

-- Each station's audit trail as it synced it (imprint_store::synced::AUDIT).
-- Entries never change: the station role may INSERT and SELECT, nothing else.
CREATE TABLE audit_trail (
    id             uuid PRIMARY KEY,              -- station-generated UUIDv7
    station_id     text NOT NULL,
    seq            bigint NOT NULL,               -- 1, 2, 3, ... per station, no gaps
    at             timestamptz NOT NULL,
    operator       text,
    kind           text NOT NULL,
    subject        text,
    detail         text NOT NULL,                 -- JSON text exactly as hashed (not jsonb: it would respell it)
    anchors        text NOT NULL,                 -- JSON text exactly as hashed
    prev_hash      text NOT NULL,
    hash           text NOT NULL,
    version        bigint NOT NULL,
    content_sha256 bytea NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (station_id, seq)
);
CREATE INDEX audit_trail_by_kind ON audit_trail (station_id, kind, at);

-- The last entry the center accepted from each station: a station whose
-- local trail was rewritten after its last sync no longer matches it.
-- Written only by the trigger below (its owner's rights), never by a station.
CREATE TABLE audit_heads (
    station_id text PRIMARY KEY,
    seq        bigint NOT NULL,
    hash       text NOT NULL,
    at         timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Chain continuity per station, checked as entries arrive: a new entry must
-- be the head's successor (seq = head + 1, prev_hash = the head's hash; the
-- first entry: seq 1 and 64 zeros). A break is refused with a data error
-- (SQLSTATE 23514), which the station quarantines with this message. An
-- entry at or below the head is left to the key constraints: the same entry
-- again (a lost acknowledgement) is recognised by its version and hash; a
-- different one at a taken position is a conflict, quarantined too.
-- Row-level BEFORE triggers see the rows inserted before them by the same
-- statement, so a batch of consecutive entries chains within one INSERT.
CREATE FUNCTION audit_trail_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    head_seq  bigint;
    head_hash text;
BEGIN
    SELECT h.seq, h.hash INTO head_seq, head_hash FROM audit_heads h WHERE h.station_id = NEW.station_id FOR UPDATE;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := repeat('0', 64);
    END IF;
    IF NEW.seq <= head_seq THEN
        IF EXISTS (SELECT 1 FROM audit_trail t WHERE t.station_id = NEW.station_id AND t.seq = NEW.seq) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit chain break for station %: entry #% is at or below the center''s head #%, where the center holds nothing',
            NEW.station_id, NEW.seq, head_seq USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'audit chain break for station %: entry #% (prev_hash %) does not follow the center''s head #% (hash %)',
            NEW.station_id, NEW.seq, left(NEW.prev_hash, 16), head_seq, left(head_hash, 16) USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM audit_trail t WHERE t.id = NEW.id) THEN
        RETURN NEW; -- the primary key refuses it; the head stays where it is
    END IF;
    INSERT INTO audit_heads (station_id, seq, hash, at) VALUES (NEW.station_id, NEW.seq, NEW.hash, NEW.at)
        ON CONFLICT (station_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at, updated_at = now();
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_trail_chain BEFORE INSERT ON audit_trail FOR EACH ROW EXECUTE FUNCTION audit_trail_chain();

-- A finished attempt never changes at the center, whoever asks: the sync
-- worker only updates attempts still `running` (push.rs `Policy`); a station
-- role's hand-made UPDATE of its own finished attempt is refused here (its
-- column grants alone would allow it). A deliberate repair by the owner
-- disables the trigger explicitly.
CREATE FUNCTION attempts_finished_never_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF OLD.status <> 'running' THEN
        RAISE EXCEPTION 'attempt % is finished (%): a finished attempt never changes at the center', OLD.id, OLD.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER attempts_finished_never_change BEFORE UPDATE ON attempts FOR EACH ROW EXECUTE FUNCTION attempts_finished_never_change();

-- An issued certificate keeps its DER, fingerprint and issue time, and never
-- goes back to `signing`; only its status may move on (e.g. revoked).
CREATE FUNCTION certificates_issued_never_change() RETURNS trigger
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
    RETURN NEW;
END
$$;
CREATE TRIGGER certificates_issued_never_change BEFORE UPDATE ON certificates FOR EACH ROW EXECUTE FUNCTION certificates_issued_never_change();

ALTER TABLE audit_trail ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON audit_trail TO imprint_station
    USING (station_id = (SELECT imprint_station_id())) WITH CHECK (station_id = (SELECT imprint_station_id()));
CREATE POLICY own_head ON audit_heads FOR SELECT TO imprint_station USING (station_id = (SELECT imprint_station_id()));
CREATE POLICY read_all ON audit_trail FOR SELECT TO imprint_reader USING (true);
CREATE POLICY read_all ON audit_heads FOR SELECT TO imprint_reader USING (true);

REVOKE ALL ON audit_trail, audit_heads FROM PUBLIC;
GRANT SELECT, INSERT ON audit_trail TO imprint_station;
GRANT SELECT ON audit_heads TO imprint_station;
GRANT SELECT ON audit_trail, audit_heads TO imprint_reader;

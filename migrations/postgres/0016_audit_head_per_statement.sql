-- Imprint central schema, version 16: the audit chain check without moving
-- the head row once per entry (issue 18: sync cost per record).
-- Applied only by an administrator (`imprint db migrate`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.
--
-- Until now `audit_trail_chain` (0002) moved the station's row in
-- `audit_heads` for every entry it accepted: an UPDATE of the same row per
-- entry, about 140 µs each on this project's machine (4,546 entries: 680 ms
-- through COPY, 64 ms with the trigger disabled, 145 ms with this version),
-- more than inserting the 90,000 steps of the same attempts. The rule is the
-- same; what changes is where the head moves and where a statement's own
-- entries are chained:
-- - the BEFORE ROW trigger locks the station's head (FOR UPDATE: a second
--   transaction of the same station waits, as before) and checks the entry
--   against it: at or below the head, only an entry already there (left to
--   the key constraints); the head's successor must carry the head's hash;
--   a later entry is left to the statement's check below;
-- - an AFTER STATEMENT trigger sees exactly the rows the statement inserted
--   (its transition table; not those an ON CONFLICT skipped): each entry
--   after the head's successor must follow an entry of the same statement
--   (seq - 1, prev_hash = its hash), else the whole statement is refused with
--   the same SQLSTATE and the first break named; then the head moves once, to
--   the statement's last entry.
-- Every entry after the head is inserted by the statement that moves the head
-- past it, so the chain the center accepts is the chain it accepted before.
-- (A per-row lookup of the entry before, instead of the statement's check,
-- was measured at 1.9 s for the 4,546 entries: on a table without statistics
-- the planner scans `audit_trail_by_kind`, all of the station's rows, per entry.)

CREATE OR REPLACE FUNCTION audit_trail_chain() RETURNS trigger
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
    IF NEW.seq = head_seq + 1 AND NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'audit chain break for station %: entry #% (prev_hash %) does not follow the center''s head #% (hash %)',
            NEW.station_id, NEW.seq, left(NEW.prev_hash, 16), head_seq, left(head_hash, 16) USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION audit_trail_statement_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.station_id, n.seq, n.prev_hash, coalesce(h.seq, 0) AS head_seq INTO bad
    FROM audit_trail_new n
    LEFT JOIN audit_heads h ON h.station_id = n.station_id
    LEFT JOIN audit_trail_new p ON p.station_id = n.station_id AND p.seq = n.seq - 1
    WHERE n.seq > coalesce(h.seq, 0) + 1 AND p.hash IS DISTINCT FROM n.prev_hash
    ORDER BY n.seq
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'audit chain break for station %: entry #% (prev_hash %) does not follow the center''s head #% or an entry #% sent with it',
            bad.station_id, bad.seq, left(bad.prev_hash, 16), bad.head_seq, bad.seq - 1 USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO audit_heads (station_id, seq, hash, at)
        SELECT DISTINCT ON (n.station_id) n.station_id, n.seq, n.hash, n.at FROM audit_trail_new n ORDER BY n.station_id, n.seq DESC
        ON CONFLICT (station_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at, updated_at = now()
        WHERE excluded.seq > audit_heads.seq;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_trail_statement_chain AFTER INSERT ON audit_trail REFERENCING NEW TABLE AS audit_trail_new
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_statement_chain();

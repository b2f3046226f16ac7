-- Imprint central schema, version 17: the overproduction check without
-- counting a work order's certificates (issue 14 item 6).
-- Applied only by an administrator (`imprint db migrate`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.
--
-- Until now `imprint_sync::work_orders::OVERPRODUCED_SQL` counted, for every
-- work order a report touches, the certificates of each of its attempts: one
-- probe of `certificates_by_attempt` per attempt, 785,000 for a site's month
-- at 10 million attempts (2.1 s under load; docs/performance.md). The count
-- is now kept as certificates and attempts arrive: `work_order_certificates`
-- holds, per (work order, station of the certificate), the number of
-- certificate rows whose attempt (certificates.attempt_id = attempts.id) has
-- that work order as its `batch`: the same rows the old query counted (any
-- status: signing, issued, revoked, superseded; a certificate its attempt
-- does not point to; several certificates of one attempt). The check reads
-- one row per work order and station.
--
-- Kept by statement-level triggers with transition tables, so one statement
-- of a station's batch adds to each (work order, station) once, and only the
-- rows it really inserted count (rows an `ON CONFLICT DO NOTHING` skipped are
-- not in the transition table: a batch sent again counts nothing):
-- - certificates inserted: those whose attempt is already at the center;
-- - attempts inserted: the certificates already at the center that belong to
--   them (a certificate that arrived before its attempt: rows arrive in any
--   order, there are no foreign keys between synced tables);
-- - rows deleted: subtracted the same way; TRUNCATE of either table: no pair
--   is left, every count goes.
-- A pair is counted once: by whichever of its two rows arrives second. Two
-- transactions inserting a certificate and its attempt at the same time
-- would each miss the other's uncommitted row; both triggers therefore take
-- a transaction-level advisory lock per station (of the inserted rows; a
-- certificate and its attempt come from the same station) before they look,
-- and each query of the PL/pgSQL function takes a new snapshot (READ
-- COMMITTED, as the sync runs), so the second sees the first's row. A
-- station's batches already go over one connection in order: the lock waits
-- only if two connections of one station insert attempts or certificates at
-- once.
-- `attempts.batch` and `certificates.attempt_id` never change (a station's
-- role may not update them; rows are never re-parented): a trigger refuses
-- the change, which would silently make the counts wrong.
--
-- Row-level security as the tables it counts: a station reads the counts of
-- its own certificates, readers and supervisors every station's.

CREATE TABLE work_order_certificates (
    work_order_id text NOT NULL,    -- attempts.batch (not necessarily a work order of this center)
    station_id    text NOT NULL,    -- certificates.station_id
    certificates  bigint NOT NULL,
    PRIMARY KEY (work_order_id, station_id)
);

CREATE FUNCTION work_order_certificates_lock(stations text[]) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT count(pg_advisory_xact_lock(hashtext('work_order_certificates'), hashtext(s)))::int * 0
    FROM (SELECT DISTINCT s FROM unnest(stations) s ORDER BY s) x
$$;

CREATE FUNCTION work_order_certificates_certificates_inserted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    PERFORM work_order_certificates_lock(ARRAY(SELECT DISTINCT n.station_id FROM certificates_new n));
    INSERT INTO work_order_certificates AS w (work_order_id, station_id, certificates)
        SELECT a.batch, n.station_id, count(*) FROM certificates_new n JOIN attempts a ON a.id = n.attempt_id
        WHERE a.batch IS NOT NULL GROUP BY a.batch, n.station_id ORDER BY 1, 2
        ON CONFLICT (work_order_id, station_id) DO UPDATE SET certificates = w.certificates + excluded.certificates;
    RETURN NULL;
END
$$;
CREATE TRIGGER work_order_certificates_certificates_inserted AFTER INSERT ON certificates
    REFERENCING NEW TABLE AS certificates_new FOR EACH STATEMENT EXECUTE FUNCTION work_order_certificates_certificates_inserted();

CREATE FUNCTION work_order_certificates_attempts_inserted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    PERFORM work_order_certificates_lock(ARRAY(SELECT DISTINCT n.station_id FROM attempts_new n WHERE n.batch IS NOT NULL));
    INSERT INTO work_order_certificates AS w (work_order_id, station_id, certificates)
        SELECT n.batch, c.station_id, count(*) FROM attempts_new n JOIN certificates c ON c.attempt_id = n.id
        WHERE n.batch IS NOT NULL GROUP BY n.batch, c.station_id ORDER BY 1, 2
        ON CONFLICT (work_order_id, station_id) DO UPDATE SET certificates = w.certificates + excluded.certificates;
    RETURN NULL;
END
$$;
CREATE TRIGGER work_order_certificates_attempts_inserted AFTER INSERT ON attempts
    REFERENCING NEW TABLE AS attempts_new FOR EACH STATEMENT EXECUTE FUNCTION work_order_certificates_attempts_inserted();

CREATE FUNCTION work_order_certificates_certificates_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    UPDATE work_order_certificates w SET certificates = w.certificates - d.n
    FROM (SELECT a.batch, o.station_id, count(*) AS n FROM certificates_old o JOIN attempts a ON a.id = o.attempt_id
          WHERE a.batch IS NOT NULL GROUP BY a.batch, o.station_id) d
    WHERE w.work_order_id = d.batch AND w.station_id = d.station_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER work_order_certificates_certificates_deleted AFTER DELETE ON certificates
    REFERENCING OLD TABLE AS certificates_old FOR EACH STATEMENT EXECUTE FUNCTION work_order_certificates_certificates_deleted();

CREATE FUNCTION work_order_certificates_attempts_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    UPDATE work_order_certificates w SET certificates = w.certificates - d.n
    FROM (SELECT o.batch, c.station_id, count(*) AS n FROM attempts_old o JOIN certificates c ON c.attempt_id = o.id
          WHERE o.batch IS NOT NULL GROUP BY o.batch, c.station_id) d
    WHERE w.work_order_id = d.batch AND w.station_id = d.station_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER work_order_certificates_attempts_deleted AFTER DELETE ON attempts
    REFERENCING OLD TABLE AS attempts_old FOR EACH STATEMENT EXECUTE FUNCTION work_order_certificates_attempts_deleted();

CREATE FUNCTION work_order_certificates_truncated() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    DELETE FROM work_order_certificates;
    RETURN NULL;
END
$$;
CREATE TRIGGER work_order_certificates_truncated AFTER TRUNCATE ON certificates
    FOR EACH STATEMENT EXECUTE FUNCTION work_order_certificates_truncated();
CREATE TRIGGER work_order_certificates_truncated AFTER TRUNCATE ON attempts
    FOR EACH STATEMENT EXECUTE FUNCTION work_order_certificates_truncated();

CREATE FUNCTION work_order_certificates_key_never_changes() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '%.% never changes at the center (work_order_certificates counts by it)', TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'check_violation';
END
$$;
CREATE TRIGGER attempts_batch_never_changes BEFORE UPDATE OF batch ON attempts FOR EACH ROW
    WHEN (OLD.batch IS DISTINCT FROM NEW.batch) EXECUTE FUNCTION work_order_certificates_key_never_changes('batch');
CREATE TRIGGER certificates_attempt_never_changes BEFORE UPDATE OF attempt_id ON certificates FOR EACH ROW
    WHEN (OLD.attempt_id IS DISTINCT FROM NEW.attempt_id) EXECUTE FUNCTION work_order_certificates_key_never_changes('attempt_id');

-- Backfill, with both tables locked against writes (a station's batch waits,
-- and is counted by the triggers once this commits).
LOCK TABLE attempts, certificates IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO work_order_certificates (work_order_id, station_id, certificates)
    SELECT a.batch, c.station_id, count(*) FROM certificates c JOIN attempts a ON a.id = c.attempt_id
    WHERE a.batch IS NOT NULL GROUP BY a.batch, c.station_id;

ALTER TABLE work_order_certificates ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON work_order_certificates FOR SELECT TO imprint_station USING (station_id = (SELECT imprint_station_id()));
CREATE POLICY read_all ON work_order_certificates FOR SELECT TO imprint_reader USING (true);
REVOKE ALL ON work_order_certificates FROM PUBLIC;
REVOKE ALL ON FUNCTION work_order_certificates_lock(text[]) FROM PUBLIC;
GRANT SELECT ON work_order_certificates TO imprint_station, imprint_reader;

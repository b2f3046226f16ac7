-- The 10-million-attempt center of `imprint-report-bench` (tests/bench/report.rs),
-- run by psql into a freshly migrated database: `psql -v n=10000000 -f report_generate.sql`.
--
-- :n attempts over 2026 (one every 31,536,000 / n seconds), round robin over
-- 10 sites (`site-0`..`site-9`), 16 ports and 7 operators, in work orders of
-- 5,000 (`WO-<i / 5000>`). At every site one attempt in 20 fails (three
-- stages and codes) and its device is retried and passes at the site's next
-- attempt, so first-pass yield (95 %) differs from final yield (100 %). One
-- device in 1,000 of a site is reworked 500 of the site's attempts later
-- (new firmware 1.3.0, a new certificate; the first one `superseded`).
-- Every passed attempt has its certificate (one issuer per site, a random
-- 20-byte serial, a 91-byte SPKI, a 300-byte stand-in for the DER; one
-- device's in 1,000 revoked), linked both ways as stations sync them
-- (attempts.certificate_id and certificates.attempt_id). One device in 100
-- of a site has a QA verdict. Every work
-- order exists with a quantity of 5,000, but one in 50 has 4,000: those are
-- overproduced (4,750 certificates each).
--
-- Ids are UUIDv7 made from the row's time, as stations make them, so rows
-- are in id order as they are in time order. Rows are inserted in time
-- order: a site's rows are interleaved with the nine others', as a center
-- receiving ten stations at once stores them.
--
-- The indexes that are not constraints are dropped before the load and made
-- again after it (faster than maintaining them row by row); their
-- definitions are the migrations', read back from pg_indexes.

\set ON_ERROR_STOP 1
SET maintenance_work_mem = '512MB';
SET synchronous_commit = off;

CREATE TEMP TABLE bench_indexes AS
    SELECT i.indexname, i.indexdef FROM pg_indexes i
    WHERE i.schemaname = 'public' AND i.tablename IN ('attempts', 'certificates', 'qa_verdicts')
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname);
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT indexname FROM bench_indexes LOOP
        EXECUTE format('DROP INDEX %I', r.indexname);
    END LOOP;
END
$$;

-- The work orders' certificate counts (migration 0017) are kept by
-- statement-level triggers; for a load of millions of rows in one statement
-- they are off (their transition tables would hold every row) and the counts
-- are made after the load, as the migration's backfill makes them.
ALTER TABLE attempts DISABLE TRIGGER work_order_certificates_attempts_inserted;
ALTER TABLE certificates DISABLE TRIGGER work_order_certificates_certificates_inserted;

-- A UUIDv7 of a time and a seed text (the random bits from md5).
CREATE FUNCTION pg_temp.bench_uuid7(t timestamptz, seed text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7' || substr(md5(seed), 1, 3)
            || '8' || substr(md5(seed), 4, 15))::uuid
$$;

INSERT INTO stations (id, db_role) SELECT 'site-' || s, 'bench_site_' || s FROM generate_series(0, 9) s;

INSERT INTO work_orders (id, product, quantity, created_by)
SELECT 'WO-' || w, 'IMP-1', CASE WHEN w % 50 = 7 THEN 4000 ELSE 5000 END, 'bench'
FROM generate_series(0, (:n - 1) / 5000) w;

INSERT INTO attempts (id, station_id, port, started_at, finished_at, status, stage, code, reason, device_serial, model,
                      hw_rev, fw_version, batch, operator, spki_sha256, certificate_id, resumed, bytes_to_device,
                      bytes_from_device, version, content_sha256)
SELECT pg_temp.bench_uuid7(ts, 'a' || i), 'site-' || (i % 10), '/dev/ttyUSB' || (i % 16), ts, ts + interval '25 seconds',
       CASE WHEN failed THEN 'failed' ELSE 'passed' END,
       CASE WHEN failed THEN (ARRAY['csr', 'issue', 'prove'])[1 + (i / 200) % 3] ELSE 'done' END,
       CASE WHEN failed THEN (ARRAY['timeout', 'key_not_allowed', 'proof_failed'])[1 + (i / 200) % 3] END,
       CASE WHEN failed THEN 'bench failure' END,
       -- The device of a failed attempt comes back at the site's next attempt (10 later);
       -- a reworked device 500 of the site's attempts later.
       'SN-' || CASE WHEN (i / 10) % 20 = 4 THEN i - 10 WHEN (i / 10) % 1000 = 999 THEN i - 5000 ELSE i END, 'IMP-1', 'B',
       CASE WHEN (i / 10) % 1000 = 999 THEN '1.3.0' ELSE '1.2.3' END, 'WO-' || (i / 5000), 'op-' || (i % 7),
       CASE WHEN NOT failed THEN md5('k' || i) || md5('l' || i) END,
       CASE WHEN NOT failed THEN pg_temp.bench_uuid7(ts + interval '20 seconds', 'c' || i) END,
       false, 4504, 2100, 1, '\x00'
FROM (SELECT i, (i / 10) % 20 = 3 AS failed, timestamptz '2026-01-01 00:00:00+00' + (i * (31536000.0 / :n)) * interval '1 second' AS ts
      FROM generate_series(0, :n - 1) i) g;

INSERT INTO certificates (id, station_id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before,
                          not_after, status, cert_der, fingerprint_sha256, created_at, issued_at, version, content_sha256,
                          revoked_at, revocation_reason, superseded_at)
SELECT a.certificate_id, a.station_id, a.id, a.device_serial, 'CN=Imprint Bench Issuing CA ' || a.station_id || ',O=Imprint Bench',
       md5('s' || a.id) || substr(md5('t' || a.id), 1, 8), a.spki_sha256,
       '\x3059301306072a8648ce3d020106082a8648ce3d030107034200'::bytea || decode('04' || a.spki_sha256 || a.spki_sha256, 'hex'),
       a.finished_at, a.finished_at + interval '10 years',
       CASE WHEN revoked THEN 'revoked' WHEN superseded THEN 'superseded' ELSE 'issued' END,
       decode(repeat(md5('d' || a.id), 19) || '3082', 'hex'), md5('f' || a.id) || md5('g' || a.id),
       a.started_at + interval '20 seconds', a.finished_at, 1, '\x00',
       CASE WHEN revoked THEN a.finished_at + interval '30 days' END, CASE WHEN revoked THEN 'keyCompromise' END,
       CASE WHEN superseded THEN a.finished_at + interval '1 day' END
FROM (SELECT *, substr(device_serial, 4)::bigint / 10 % 1000 = 123 AS revoked,
             substr(device_serial, 4)::bigint / 10 % 1000 = 499 AND fw_version = '1.2.3' AS superseded
      FROM attempts WHERE status = 'passed') a;

INSERT INTO qa_verdicts (id, station_id, at, operator, port, device_serial, batch, verdict, checks, version, content_sha256)
SELECT pg_temp.bench_uuid7(finished_at + interval '1 hour', 'q' || id), station_id, finished_at + interval '1 hour', 'qa-1', port,
       device_serial, batch, 'pass', '[]', 1, '\x00'
FROM attempts WHERE status = 'passed' AND fw_version = '1.2.3' AND substr(device_serial, 4)::bigint / 10 % 100 = 1;

DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT indexdef FROM bench_indexes LOOP
        EXECUTE r.indexdef;
    END LOOP;
END
$$;

ALTER TABLE attempts ENABLE TRIGGER work_order_certificates_attempts_inserted;
ALTER TABLE certificates ENABLE TRIGGER work_order_certificates_certificates_inserted;
INSERT INTO work_order_certificates (work_order_id, station_id, certificates)
    SELECT a.batch, c.station_id, count(*) FROM certificates c JOIN attempts a ON a.id = c.attempt_id
    WHERE a.batch IS NOT NULL GROUP BY a.batch, c.station_id;

-- As autovacuum leaves a table that stopped growing: statistics, and the
-- visibility map that index-only scans need.
VACUUM ANALYZE attempts;
VACUUM ANALYZE certificates;
VACUUM ANALYZE qa_verdicts;
VACUUM ANALYZE work_orders;
VACUUM ANALYZE work_order_certificates;

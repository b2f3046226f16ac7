-- Imprint central schema, version 15: reports at the center's scale (issue 14
-- item 6). Applied only by an administrator (`imprint db migrate --url ...`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.
--
-- Measured with 10 million attempts and their certificates (docs/performance.md,
-- "Reports at the center"): a site's month is about 82,000 attempts spread over
-- a month of every station's rows, so each row the report reads from a table
-- is on a page of its own. These indexes let the report read them from
-- indexes only (index-only scans: the visibility map, kept by autovacuum, says
-- the heap need not be visited).
--
-- Building them locks the tables against writes while they are built (about
-- 10-30 s each at 10 million rows here); stations retry their batches meanwhile.

-- 1. A site's date range, covering every column the report's summary reads
--    (`imprint_sync::summary_sql`) and the filters it takes. The same key as
--    attempts_by_station, which it replaces (one index to maintain, not two).
--    Not HOT: an attempt's update that changes one of these columns (a running
--    attempt finishing) writes a new index entry, as attempts_by_device's
--    device_serial already made it do.
CREATE INDEX attempts_by_station_covering ON attempts (station_id, started_at)
    INCLUDE (id, status, stage, code, device_serial, batch, operator, certificate_id);
DROP INDEX attempts_by_station;

-- 2. The certificate of each reported attempt, with what the summary counts
--    of it (issuer, serial, status): the report's LEFT JOIN probes this
--    instead of a certificate row of 700-800 bytes on a page of its own.
CREATE INDEX certificates_report ON certificates (id) INCLUDE (serial_hex, status, issuer);

-- 3. The overproduction check (`imprint_sync::work_orders::OVERPRODUCED_SQL`):
--    a work order's attempts with their ids, then each attempt's certificates.
--    certificates.attempt_id had no index: the check read every certificate.
CREATE INDEX attempts_by_batch_covering ON attempts (batch, started_at) INCLUDE (id);
DROP INDEX attempts_by_batch;
CREATE INDEX certificates_by_attempt ON certificates (attempt_id);

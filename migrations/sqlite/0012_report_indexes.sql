-- Reports (issue 14): `imprint report` / `export` filter attempts by the
-- time they started, by work order and by operator, newest first. Without
-- these a date range scanned every attempt (only status+started_at and
-- device_serial were indexed).
CREATE INDEX attempts_by_started ON attempts(started_at, id);
-- Replaces 0011's attempts_by_batch(batch): (batch, started_at) serves the
-- quota's lookups by work order as well as reports by work order and time.
DROP INDEX IF EXISTS attempts_by_batch;
CREATE INDEX attempts_by_batch ON attempts(batch, started_at);
CREATE INDEX attempts_by_operator ON attempts(operator, started_at);

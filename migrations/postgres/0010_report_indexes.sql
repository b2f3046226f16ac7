-- Reports at the center (issue 14): a date range across stations, a work
-- order, an operator, newest first (`imprint report --central`). One
-- station's range already has attempts_by_station (station_id, started_at).
CREATE INDEX attempts_by_started ON attempts (started_at, id);
CREATE INDEX attempts_by_batch ON attempts (batch, started_at);
CREATE INDEX attempts_by_operator ON attempts (operator, started_at);

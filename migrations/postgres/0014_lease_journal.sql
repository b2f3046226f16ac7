-- Imprint central schema, version 14: each station's lease journal and its
-- reconciliation with the center's leases (docs/work-orders.md#the-lease-journal,
-- issue 13: "leases, consumption and returns sync like every other record
-- and are audited"). Applied only by an administrator (`imprint db migrate`).
-- Never edit an applied migration (sqlx refuses a changed checksum): add a new file.
--
-- The center's `work_order_leases` (0009) is what its two functions granted
-- and were told. The lease journal is the station's own account of the same
-- leases, synced record kind `lease_event` (imprint_store::synced::LEASE_EVENTS):
-- asked, granted or refused, each use the center acknowledged (`reported`),
-- settled with the final count and what went back. Entries never change: a
-- station role may INSERT and SELECT its own rows only.

CREATE TABLE lease_journal (
    id             uuid PRIMARY KEY,          -- station-generated UUIDv7
    station_id     text NOT NULL,
    lease_id       uuid NOT NULL,             -- work_order_leases.id
    work_order_id  text NOT NULL,
    at             timestamptz NOT NULL,
    event          text NOT NULL,             -- asked | granted | refused | reported | settled
    asked          bigint,
    granted        bigint,
    used           bigint,
    returned       bigint,
    expires_at     timestamptz,
    central_free   bigint,
    version        bigint NOT NULL,
    content_sha256 bytea NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lease_journal_by_lease ON lease_journal (lease_id, station_id);
CREATE INDEX lease_journal_by_work_order ON lease_journal (work_order_id);

ALTER TABLE lease_journal ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON lease_journal TO imprint_station
    USING (station_id = (SELECT imprint_station_id())) WITH CHECK (station_id = (SELECT imprint_station_id()));
CREATE POLICY read_all ON lease_journal FOR SELECT TO imprint_reader, imprint_supervisor USING (true);

REVOKE ALL ON lease_journal FROM PUBLIC;
GRANT SELECT, INSERT ON lease_journal TO imprint_station;
GRANT SELECT ON lease_journal TO imprint_reader, imprint_supervisor;

-- One row per lease of a station, from the center's `work_order_leases`
-- and the station's journal side by side, with every way they disagree
-- (`disagreements`, empty when they agree):
--   grant_missing_from_journal       the center leased it; the journal has no grant
--   lease_unknown_at_center          the journal has a grant the center never made
--   refused_but_leased               the journal says nothing was granted; the center leased it
--   journal_inconsistent             more than one grant or settlement, or two work orders, for one lease
--   work_order_differs, granted_differs, expiry_differs
--   settlement_missing_from_journal  settled at the center; no settlement in the journal
--   settled_only_in_journal          the journal settled it; the center did not
--   used_differs, returned_differs   the settlement's count or return differs from the center's
--   journal_reports_more_than_center a use the journal says the center acknowledged, above the center's count
--   report_missing_from_journal      the center holds more use than the journal says it acknowledged
-- A station's journal reaches the center in the round that follows each
-- change (the lease step runs before the records go), so a disagreement
-- about a change made after the station's last completed round
-- (`synced_since` false) may be a round in flight; one that stays after a
-- round is a journal missing, tampered with, or a center that differs.
-- Requests that were never granted and refusals (no center lease) are not rows.
CREATE VIEW lease_reconciliation AS
WITH j AS (
    SELECT station_id, lease_id,
           min(work_order_id) AS work_order_id,
           count(DISTINCT work_order_id) AS work_orders,
           count(*) FILTER (WHERE event = 'granted') AS grants,
           count(*) FILTER (WHERE event = 'refused') AS refusals,
           count(*) FILTER (WHERE event = 'reported') AS reports,
           count(*) FILTER (WHERE event = 'settled') AS settlements,
           max(granted) FILTER (WHERE event = 'granted') AS granted,
           max(expires_at) FILTER (WHERE event = 'granted') AS expires_at,
           max(used) FILTER (WHERE event = 'reported') AS reported,
           max(used) FILTER (WHERE event = 'settled') AS settled_used,
           max(returned) FILTER (WHERE event = 'settled') AS returned
    FROM lease_journal
    GROUP BY station_id, lease_id
)
SELECT coalesce(l.station_id, j.station_id) AS station_id,
       coalesce(l.id, j.lease_id) AS lease_id,
       coalesce(l.work_order_id, j.work_order_id) AS work_order_id,
       l.size AS center_size,
       l.used AS center_used,
       l.expires_at AS center_expires_at,
       l.settled_at AS center_settled_at,
       j.granted AS journal_granted,
       j.expires_at AS journal_expires_at,
       j.reported AS journal_reported,
       j.settled_used AS journal_used,
       j.returned AS journal_returned,
       coalesce(s.last_sync_at >= greatest(l.granted_at, l.settled_at), false) AS synced_since,
       array_remove(ARRAY[
           CASE WHEN l.id IS NOT NULL AND coalesce(j.grants, 0) = 0 THEN 'grant_missing_from_journal' END,
           CASE WHEN l.id IS NULL AND j.grants > 0 THEN 'lease_unknown_at_center' END,
           CASE WHEN l.id IS NOT NULL AND j.refusals > 0 THEN 'refused_but_leased' END,
           CASE WHEN j.grants > 1 OR j.settlements > 1 OR j.work_orders > 1 THEN 'journal_inconsistent' END,
           CASE WHEN l.id IS NOT NULL AND j.lease_id IS NOT NULL AND l.work_order_id <> j.work_order_id THEN 'work_order_differs' END,
           CASE WHEN l.id IS NOT NULL AND j.grants > 0 AND j.granted IS DISTINCT FROM l.size THEN 'granted_differs' END,
           CASE WHEN l.id IS NOT NULL AND j.grants > 0
                     AND date_trunc('milliseconds', j.expires_at) IS DISTINCT FROM date_trunc('milliseconds', l.expires_at)
                THEN 'expiry_differs' END,
           CASE WHEN l.settled_at IS NOT NULL AND coalesce(j.settlements, 0) = 0 THEN 'settlement_missing_from_journal' END,
           CASE WHEN l.id IS NOT NULL AND l.settled_at IS NULL AND j.settlements > 0 THEN 'settled_only_in_journal' END,
           CASE WHEN l.settled_at IS NOT NULL AND j.settlements > 0 AND j.settled_used IS DISTINCT FROM l.used THEN 'used_differs' END,
           CASE WHEN l.settled_at IS NOT NULL AND j.settlements > 0 AND j.returned IS DISTINCT FROM l.size - l.used
                THEN 'returned_differs' END,
           CASE WHEN l.id IS NOT NULL AND coalesce(j.reported, 0) > l.used THEN 'journal_reports_more_than_center' END,
           CASE WHEN l.id IS NOT NULL AND l.settled_at IS NULL AND l.used > coalesce(j.reported, 0)
                THEN 'report_missing_from_journal' END
       ]::text[], NULL) AS disagreements
FROM work_order_leases l
FULL JOIN j ON j.lease_id = l.id AND j.station_id = l.station_id
LEFT JOIN stations s ON s.id = coalesce(l.station_id, j.station_id)
WHERE l.id IS NOT NULL OR j.grants > 0 OR j.reports > 0 OR j.settlements > 0;

-- Runs with its owner's rights (it reads every station's journal and
-- leases): supervisors and readers, not stations.
REVOKE ALL ON lease_reconciliation FROM PUBLIC;
GRANT SELECT ON lease_reconciliation TO imprint_reader, imprint_supervisor;

-- Per work order and station: what the center leased and holds as used,
-- against the station's certificates for the work order at the center
-- (each certificate journaled under a leased work order used one). Once a
-- station's leases of a work order are all settled and its records synced,
-- `used` equals `certificates`; `agrees` says so (NULL while a lease is
-- outstanding: its use is still being reported).
CREATE VIEW lease_use_by_station AS
SELECT l.work_order_id, l.station_id,
       sum(l.size) AS leased,
       sum(l.used) AS used,
       count(*) FILTER (WHERE l.settled_at IS NULL) AS outstanding,
       c.certificates,
       CASE WHEN count(*) FILTER (WHERE l.settled_at IS NULL) = 0 THEN sum(l.used) = c.certificates END AS agrees
FROM work_order_leases l
CROSS JOIN LATERAL (
    SELECT count(*) AS certificates FROM certificates x JOIN attempts a ON a.id = x.attempt_id AND a.station_id = x.station_id
    WHERE a.batch = l.work_order_id AND x.station_id = l.station_id
) c
GROUP BY l.work_order_id, l.station_id, c.certificates;

REVOKE ALL ON lease_use_by_station FROM PUBLIC;
GRANT SELECT ON lease_use_by_station TO imprint_reader, imprint_supervisor;

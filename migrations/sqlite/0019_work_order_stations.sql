-- Imprint local store, schema version 19: which stations a central work
-- order names, and a work order the center stopped showing this station
-- (docs/work-orders.md#which-stations-draw-on-a-work-order; central schema 18).
--
-- The center shows a station only the work orders that name it (or name no
-- station: every station). A copy this station took earlier that the center
-- no longer shows it (a supervisor assigned the order to other stations) is
-- **withdrawn** here: nothing new starts or is journaled under it, its
-- leases settle in the next round as for a closed order, and it comes back
-- (withdrawn_at NULL again) when the center shows it again. Each is a
-- `work_order_changed` audit entry (`withdrawn_at_center`, `assigned_at_center`).

-- The station ids the center names, as a JSON array (NULL: every station, or a local work order).
ALTER TABLE work_orders ADD COLUMN stations TEXT;
-- When the center stopped showing it to this station (NULL: it does, or a local work order).
ALTER TABLE work_orders ADD COLUMN withdrawn_at TEXT;

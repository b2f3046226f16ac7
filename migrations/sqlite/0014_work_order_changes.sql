-- Imprint local store, schema version 14: supervisors change work orders
-- (product, quantity, validity window; docs/work-orders.md, issue 13 item 1).
-- Version 13 belongs to another feature; nothing here touches its tables.
--
-- The quantity never goes below `issued` (0011's CHECK already says so). A
-- closed work order is final: none of its fields change any more.

CREATE TRIGGER work_orders_closed_does_not_change BEFORE UPDATE OF product, quantity, valid_from, valid_until ON work_orders
WHEN OLD.status = 'closed'
    AND (NEW.product IS NOT OLD.product OR NEW.quantity IS NOT OLD.quantity
         OR NEW.valid_from IS NOT OLD.valid_from OR NEW.valid_until IS NOT OLD.valid_until)
BEGIN
    SELECT RAISE(ABORT, 'a closed work order does not change');
END;

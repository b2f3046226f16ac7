-- Imprint central schema 9: work orders and their quota leases
-- (docs/work-orders.md, issue 13 step 3). Versions 7 and 8 belong to other
-- features; nothing here touches their tables.
--
-- The center grants a station a block of a work order's quantity as a
-- lease. The invariant, at every moment:
--     consumed + leased <= quantity
-- where `consumed` is what stations reported used and `leased` what is
-- granted and not yet reported used or returned. It is a CHECK on the row,
-- and every change goes through the two functions below, which take the
-- work order's row lock: two stations asking at once are serialized.
-- A lease's id is chosen by the station (a UUIDv7 it records before asking),
-- so a request repeated after a lost reply returns the same lease.
-- Unused quota comes back only when the station reports the lease settled
-- (expired or its work order closed): a station that consumed offline
-- until its lease expired reports before anything is given out again, so
-- an unreachable station's lease is never handed to another.

CREATE TABLE work_orders (
    id          text PRIMARY KEY,
    product     text NOT NULL,
    quantity    bigint NOT NULL CHECK (quantity > 0),
    consumed    bigint NOT NULL DEFAULT 0 CHECK (consumed >= 0),
    leased      bigint NOT NULL DEFAULT 0 CHECK (leased >= 0),
    valid_from  timestamptz,
    valid_until timestamptz,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    closed_at   timestamptz,
    closed_by   text,
    CONSTRAINT work_orders_never_over_quantity CHECK (consumed + leased <= quantity)
);

CREATE TABLE work_order_leases (
    id            uuid PRIMARY KEY,                -- chosen by the station
    work_order_id text NOT NULL REFERENCES work_orders(id),
    station_id    text NOT NULL,
    size          bigint NOT NULL CHECK (size > 0),
    used          bigint NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= size),
    granted_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    settled_at    timestamptz                      -- NULL: outstanding
);
CREATE INDEX work_order_leases_outstanding ON work_order_leases (work_order_id) WHERE settled_at IS NULL;

-- A closed work order stays closed.
CREATE FUNCTION work_orders_closed_is_final() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'closed' AND NEW.status <> 'closed' THEN
        RAISE EXCEPTION 'work order % is closed: a closed work order stays closed', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER work_orders_closed_is_final BEFORE UPDATE ON work_orders
    FOR EACH ROW EXECUTE FUNCTION work_orders_closed_is_final();

-- Grant the calling station up to p_size of the work order's free quantity
-- (less when less is left; 0 when nothing is, or the work order is closed
-- or outside its dates), valid for p_ttl_seconds (never past the work
-- order's valid_until). Idempotent by p_lease.
CREATE FUNCTION lease_work_order(p_lease uuid, p_work_order text, p_size bigint, p_ttl_seconds bigint)
    RETURNS TABLE (lease_id uuid, granted bigint, expires_at timestamptz, free bigint, status text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    st text;
    w work_orders%ROWTYPE;
    prior work_order_leases%ROWTYPE;
    g bigint;
    exp timestamptz;
BEGIN
    SELECT s.id INTO st FROM stations s WHERE s.db_role = session_user;
    IF st IS NULL THEN
        RAISE EXCEPTION 'login role % is not registered as a station', session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_size <= 0 OR p_ttl_seconds <= 0 THEN
        RAISE EXCEPTION 'a lease needs a positive size and lifetime' USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO w FROM work_orders WHERE id = p_work_order FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown work order %', p_work_order USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO prior FROM work_order_leases l WHERE l.id = p_lease;
    IF FOUND THEN
        IF prior.station_id <> st OR prior.work_order_id <> p_work_order THEN
            RAISE EXCEPTION 'lease % belongs to another station or work order', p_lease USING ERRCODE = 'unique_violation';
        END IF;
        RETURN QUERY SELECT prior.id, prior.size, prior.expires_at, w.quantity - w.consumed - w.leased, w.status;
        RETURN;
    END IF;
    IF w.status <> 'open' OR (w.valid_from IS NOT NULL AND now() < w.valid_from)
       OR (w.valid_until IS NOT NULL AND now() >= w.valid_until) THEN
        g := 0;
    ELSE
        g := least(p_size, w.quantity - w.consumed - w.leased);
    END IF;
    exp := now() + make_interval(secs => p_ttl_seconds);
    IF w.valid_until IS NOT NULL THEN
        exp := least(exp, w.valid_until);
    END IF;
    IF g <= 0 THEN
        RETURN QUERY SELECT NULL::uuid, 0::bigint, exp, w.quantity - w.consumed - w.leased, w.status;
        RETURN;
    END IF;
    UPDATE work_orders SET leased = leased + g WHERE id = p_work_order;
    INSERT INTO work_order_leases (id, work_order_id, station_id, size, expires_at) VALUES (p_lease, p_work_order, st, g, exp);
    RETURN QUERY SELECT p_lease, g, exp, w.quantity - w.consumed - w.leased - g, w.status;
END
$$;

-- The calling station reports how much of its lease it has used (only
-- ever more: a stale report changes nothing) and, with p_settle, returns
-- the rest. A settled lease never changes again.
CREATE FUNCTION report_work_order_lease(p_lease uuid, p_used bigint, p_settle boolean)
    RETURNS TABLE (used bigint, settled boolean, returned bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    st text;
    l work_order_leases%ROWTYPE;
    u bigint;
    back bigint := 0;
BEGIN
    SELECT s.id INTO st FROM stations s WHERE s.db_role = session_user;
    IF st IS NULL THEN
        RAISE EXCEPTION 'login role % is not registered as a station', session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The work order's row first, then the lease's: the same order as lease_work_order.
    PERFORM 1 FROM work_orders w WHERE w.id = (SELECT x.work_order_id FROM work_order_leases x WHERE x.id = p_lease) FOR UPDATE;
    SELECT * INTO l FROM work_order_leases x WHERE x.id = p_lease AND x.station_id = st FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no lease % of this station', p_lease USING ERRCODE = 'no_data_found';
    END IF;
    IF p_used > l.size THEN
        RAISE EXCEPTION 'lease % is %, a station cannot have used %', p_lease, l.size, p_used USING ERRCODE = 'check_violation';
    END IF;
    u := greatest(l.used, p_used);
    IF l.settled_at IS NOT NULL THEN
        IF u <> l.used THEN
            RAISE EXCEPTION 'lease % was settled at % with % used: it does not change', p_lease, l.settled_at, l.used
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN QUERY SELECT l.used, true, 0::bigint;
        RETURN;
    END IF;
    IF p_settle THEN
        back := l.size - u;
    END IF;
    UPDATE work_orders SET consumed = consumed + (u - l.used), leased = leased - (u - l.used) - back WHERE id = l.work_order_id;
    UPDATE work_order_leases x SET used = u, settled_at = CASE WHEN p_settle THEN now() END WHERE x.id = p_lease;
    RETURN QUERY SELECT u, p_settle, back;
END
$$;

ALTER TABLE work_orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE work_order_leases ENABLE ROW LEVEL SECURITY;
-- Stations read the work orders (the catalogue they pull) and their own leases.
CREATE POLICY work_orders_read ON work_orders FOR SELECT TO imprint_station, imprint_reader USING (true);
CREATE POLICY work_order_leases_own ON work_order_leases FOR SELECT TO imprint_station
    USING (station_id = (SELECT imprint_station_id()));
CREATE POLICY work_order_leases_read ON work_order_leases FOR SELECT TO imprint_reader USING (true);
GRANT SELECT ON work_orders, work_order_leases TO imprint_station, imprint_reader;
REVOKE ALL ON FUNCTION lease_work_order(uuid, text, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION report_work_order_lease(uuid, bigint, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lease_work_order(uuid, text, bigint, bigint) TO imprint_station;
GRANT EXECUTE ON FUNCTION report_work_order_lease(uuid, bigint, boolean) TO imprint_station;

-- Imprint central schema 18: a work order names the stations that may draw
-- on it (docs/work-orders.md#which-stations-draw-on-a-work-order).
--
-- Until now every station read every work order and could lease from any
-- of them: an untrusted contract manufacturer's station saw every
-- customer's orders and could mint identities under another line's order.
-- `work_orders.stations` lists the station ids (`stations.id`) that may
-- see and lease the order; NULL is every station (as before, so existing
-- orders keep working); an empty list is refused.
--
-- Enforced here, not in a station or the app:
--   * a RESTRICTIVE row-level policy for `imprint_station`: a station's
--     login role sees a work order only when `stations` is NULL or names
--     it (`imprint_station_id()`), even one that has also been granted
--     `imprint_reader` or `imprint_supervisor` by mistake;
--   * `lease_work_order` grants a station not named nothing and answers
--     with the status `not_assigned` (granted 0, free 0: it learns nothing
--     of the order's quantity). A request repeated with the id of a lease
--     granted while the station was named still returns that lease, so the
--     station can settle it and the quantity comes back;
--   * `report_work_order_lease` is unchanged: a station that is no longer
--     named still reports and settles what it holds;
--   * supervisors set the list through `add_work_order` / `change_work_order`
--     (new signatures below); an unknown station id is refused (SQLSTATE
--     23503), and the list before and after is in `work_order_changes`.
-- Supervisors and readers keep seeing every work order.

ALTER TABLE work_orders ADD COLUMN stations text[];
ALTER TABLE work_orders ADD CONSTRAINT work_orders_stations_named
    CHECK (stations IS NULL OR (cardinality(stations) > 0 AND array_position(stations, NULL) IS NULL));

CREATE POLICY work_orders_station_assigned ON work_orders AS RESTRICTIVE FOR SELECT TO imprint_station
    USING (stations IS NULL OR (SELECT imprint_station_id()) = ANY (stations));

-- The fields a change records before and after, now with the stations.
CREATE OR REPLACE FUNCTION work_order_fields(w work_orders) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT jsonb_build_object('product', w.product, 'quantity', w.quantity, 'valid_from', w.valid_from,
                                    'valid_until', w.valid_until, 'status', w.status, 'consumed', w.consumed, 'leased', w.leased,
                                    'stations', w.stations) $$;

-- The station list as stored (sorted, each once), or why not: an empty list
-- or a NULL element is 23514, an id that is not a registered station 23503
-- (naming the unknown ones and the ones the center knows).
CREATE FUNCTION work_order_stations(p text[]) RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    unknown text;
    known text;
BEGIN
    IF p IS NULL THEN
        RETURN NULL;
    END IF;
    IF cardinality(p) = 0 OR array_position(p, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'a work order names at least one station (or every station)' USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(DISTINCT x, ', ' ORDER BY x) INTO unknown FROM unnest(p) x WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.id = x);
    IF unknown IS NOT NULL THEN
        SELECT coalesce(string_agg(s.id, ', ' ORDER BY s.id), 'none') INTO known FROM stations s;
        RAISE EXCEPTION 'unknown station %: the center knows %', unknown, known USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- Byte order ("C"), as the stations sort their copies: the same list reads the same everywhere.
    RETURN (SELECT array_agg(x ORDER BY x COLLATE "C") FROM (SELECT DISTINCT x FROM unnest(p) x) d);
END
$$;

DROP FUNCTION add_work_order(text, text, bigint, timestamptz, timestamptz, text);
DROP FUNCTION change_work_order(text, text, bigint, boolean, timestamptz, boolean, timestamptz, text);

CREATE FUNCTION add_work_order(p_id text, p_product text, p_quantity bigint, p_valid_from timestamptz,
                               p_valid_until timestamptz, p_operator text, p_stations text[])
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    w work_orders%ROWTYPE;
BEGIN
    PERFORM work_orders_refuse_station();
    IF p_valid_from IS NOT NULL AND p_valid_until IS NOT NULL AND p_valid_from >= p_valid_until THEN
        RAISE EXCEPTION 'the validity window is empty: % is not before %', p_valid_from, p_valid_until USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO work_orders (id, product, quantity, valid_from, valid_until, created_by, stations)
        VALUES (p_id, p_product, p_quantity, p_valid_from, p_valid_until, p_operator, work_order_stations(p_stations))
        RETURNING * INTO w;
    INSERT INTO work_order_changes (work_order_id, action, operator, after) VALUES (p_id, 'created', p_operator, work_order_fields(w));
END
$$;

-- NULL leaves a field as it is; p_set_from / p_set_until / p_set_stations
-- replace a window bound or the station list (NULL: no bound, every station).
CREATE FUNCTION change_work_order(p_id text, p_product text, p_quantity bigint, p_set_from boolean, p_valid_from timestamptz,
                                  p_set_until boolean, p_valid_until timestamptz, p_operator text,
                                  p_set_stations boolean, p_stations text[])
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    w work_orders%ROWTYPE;
    n work_orders%ROWTYPE;
BEGIN
    PERFORM work_orders_refuse_station();
    SELECT * INTO w FROM work_orders WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown work order %', p_id USING ERRCODE = 'no_data_found';
    END IF;
    IF w.status <> 'open' THEN
        RAISE EXCEPTION 'work order % was closed at %: a closed work order does not change', p_id, w.closed_at USING ERRCODE = 'check_violation';
    END IF;
    n := w;
    n.product := coalesce(p_product, w.product);
    n.quantity := coalesce(p_quantity, w.quantity);
    IF p_set_from THEN n.valid_from := p_valid_from; END IF;
    IF p_set_until THEN n.valid_until := p_valid_until; END IF;
    IF p_set_stations THEN n.stations := work_order_stations(p_stations); END IF;
    IF n.quantity < w.consumed + w.leased THEN
        RAISE EXCEPTION 'work order % cannot go down to %: % certificates are already issued or leased', p_id, n.quantity, w.consumed + w.leased
            USING ERRCODE = 'check_violation';
    END IF;
    IF n.valid_from IS NOT NULL AND n.valid_until IS NOT NULL AND n.valid_from >= n.valid_until THEN
        RAISE EXCEPTION 'the validity window is empty: % is not before %', n.valid_from, n.valid_until USING ERRCODE = 'check_violation';
    END IF;
    UPDATE work_orders SET product = n.product, quantity = n.quantity, valid_from = n.valid_from, valid_until = n.valid_until,
                           stations = n.stations
        WHERE id = p_id RETURNING * INTO n;
    INSERT INTO work_order_changes (work_order_id, action, operator, before, after)
        VALUES (p_id, 'changed', p_operator, work_order_fields(w), work_order_fields(n));
END
$$;

-- 0009's lease_work_order with one more refusal: a station the work order
-- does not name is granted nothing, with the status `not_assigned`.
CREATE OR REPLACE FUNCTION lease_work_order(p_lease uuid, p_work_order text, p_size bigint, p_ttl_seconds bigint)
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
    -- A lease already granted (asked again after a lost reply) is returned even
    -- if the station is no longer named: it holds it, and settles it.
    SELECT * INTO prior FROM work_order_leases l WHERE l.id = p_lease;
    IF FOUND THEN
        IF prior.station_id <> st OR prior.work_order_id <> p_work_order THEN
            RAISE EXCEPTION 'lease % belongs to another station or work order', p_lease USING ERRCODE = 'unique_violation';
        END IF;
        RETURN QUERY SELECT prior.id, prior.size, prior.expires_at, w.quantity - w.consumed - w.leased, w.status;
        RETURN;
    END IF;
    IF w.stations IS NOT NULL AND NOT (st = ANY (w.stations)) THEN
        RETURN QUERY SELECT NULL::uuid, 0::bigint, now(), 0::bigint, 'not_assigned'::text;
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

REVOKE ALL ON FUNCTION work_order_stations(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION add_work_order(text, text, bigint, timestamptz, timestamptz, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION change_work_order(text, text, bigint, boolean, timestamptz, boolean, timestamptz, text, boolean, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION add_work_order(text, text, bigint, timestamptz, timestamptz, text, text[]) TO imprint_supervisor;
GRANT EXECUTE ON FUNCTION change_work_order(text, text, bigint, boolean, timestamptz, boolean, timestamptz, text, boolean, text[])
    TO imprint_supervisor;

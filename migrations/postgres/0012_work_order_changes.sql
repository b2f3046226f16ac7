-- Imprint central schema 12: supervisors create, change and close work
-- orders at the center (docs/work-orders.md, issue 13 item 1). Versions 10
-- and 11 belong to other features; this touches only work_orders (0009) and
-- adds its own table and functions.
--
-- Every change goes through one of the three functions below, under the
-- work order's row lock, and leaves a row in `work_order_changes` with the
-- fields before and after. They run for members of `imprint_supervisor`
-- (a login role per site or per supervisor: `imprint db add-supervisor`)
-- and for the administrator who owns them; a station's login role is
-- refused inside each function, whatever it has been granted.
-- A quantity never goes below what stations consumed plus what is leased
-- out (0009's CHECK says the same of every row).

DO $$
BEGIN
    BEGIN
        CREATE ROLE imprint_supervisor NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

CREATE TABLE work_order_changes (
    id            bigserial PRIMARY KEY,
    work_order_id text NOT NULL REFERENCES work_orders(id),
    action        text NOT NULL CHECK (action IN ('created', 'changed', 'closed')),
    operator      text,                          -- the supervisor signed in at the station or CLI
    db_role       name NOT NULL DEFAULT session_user,
    at            timestamptz NOT NULL DEFAULT now(),
    before        jsonb,                         -- NULL when created
    after         jsonb NOT NULL
);
CREATE INDEX work_order_changes_by_order ON work_order_changes (work_order_id, at);

-- Refuse a station's login role (registered in `stations`, or a direct member of imprint_station).
CREATE FUNCTION work_orders_refuse_station() RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM stations s WHERE s.db_role = session_user)
       OR EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
                  WHERE g.rolname = 'imprint_station' AND u.rolname = session_user) THEN
        RAISE EXCEPTION 'login role % is a station: work orders are created, changed and closed by supervisors', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

CREATE FUNCTION work_order_fields(w work_orders) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT jsonb_build_object('product', w.product, 'quantity', w.quantity, 'valid_from', w.valid_from,
                                    'valid_until', w.valid_until, 'status', w.status, 'consumed', w.consumed, 'leased', w.leased) $$;

CREATE FUNCTION add_work_order(p_id text, p_product text, p_quantity bigint, p_valid_from timestamptz,
                               p_valid_until timestamptz, p_operator text)
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
    INSERT INTO work_orders (id, product, quantity, valid_from, valid_until, created_by)
        VALUES (p_id, p_product, p_quantity, p_valid_from, p_valid_until, p_operator)
        RETURNING * INTO w;
    INSERT INTO work_order_changes (work_order_id, action, operator, after) VALUES (p_id, 'created', p_operator, work_order_fields(w));
END
$$;

-- NULL leaves a field as it is; p_set_from / p_set_until replace a window bound (NULL removes it).
CREATE FUNCTION change_work_order(p_id text, p_product text, p_quantity bigint, p_set_from boolean, p_valid_from timestamptz,
                                  p_set_until boolean, p_valid_until timestamptz, p_operator text)
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
    IF n.quantity < w.consumed + w.leased THEN
        RAISE EXCEPTION 'work order % cannot go down to %: % certificates are already issued or leased', p_id, n.quantity, w.consumed + w.leased
            USING ERRCODE = 'check_violation';
    END IF;
    IF n.valid_from IS NOT NULL AND n.valid_until IS NOT NULL AND n.valid_from >= n.valid_until THEN
        RAISE EXCEPTION 'the validity window is empty: % is not before %', n.valid_from, n.valid_until USING ERRCODE = 'check_violation';
    END IF;
    UPDATE work_orders SET product = n.product, quantity = n.quantity, valid_from = n.valid_from, valid_until = n.valid_until
        WHERE id = p_id RETURNING * INTO n;
    INSERT INTO work_order_changes (work_order_id, action, operator, before, after)
        VALUES (p_id, 'changed', p_operator, work_order_fields(w), work_order_fields(n));
END
$$;

-- Close: nothing more is leased; stations return what they hold when they settle.
CREATE FUNCTION close_work_order(p_id text, p_operator text)
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
        RAISE EXCEPTION 'work order % was closed at %', p_id, w.closed_at USING ERRCODE = 'check_violation';
    END IF;
    UPDATE work_orders SET status = 'closed', closed_at = now(), closed_by = p_operator WHERE id = p_id RETURNING * INTO n;
    INSERT INTO work_order_changes (work_order_id, action, operator, before, after)
        VALUES (p_id, 'closed', p_operator, work_order_fields(w), work_order_fields(n));
END
$$;

ALTER TABLE work_order_changes ENABLE ROW LEVEL SECURITY;
CREATE POLICY work_order_changes_read ON work_order_changes FOR SELECT TO imprint_supervisor, imprint_reader USING (true);
CREATE POLICY work_orders_supervisor_read ON work_orders FOR SELECT TO imprint_supervisor USING (true);
CREATE POLICY work_order_leases_supervisor_read ON work_order_leases FOR SELECT TO imprint_supervisor USING (true);
GRANT SELECT ON work_orders, work_order_leases, work_order_changes TO imprint_supervisor;
GRANT SELECT ON work_order_changes TO imprint_reader;
REVOKE ALL ON FUNCTION work_orders_refuse_station() FROM PUBLIC;
REVOKE ALL ON FUNCTION add_work_order(text, text, bigint, timestamptz, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION change_work_order(text, text, bigint, boolean, timestamptz, boolean, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION close_work_order(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION add_work_order(text, text, bigint, timestamptz, timestamptz, text) TO imprint_supervisor;
GRANT EXECUTE ON FUNCTION change_work_order(text, text, bigint, boolean, timestamptz, boolean, timestamptz, text) TO imprint_supervisor;
GRANT EXECUTE ON FUNCTION close_work_order(text, text) TO imprint_supervisor;

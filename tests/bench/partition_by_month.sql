-- EXPERIMENTAL, for benchmarks only (not a migration): turn the center's
-- `attempts` (by started_at) and `attempt_steps` (by at) into tables
-- partitioned by month, in place, after the migrations, keeping their rows,
-- columns, defaults, CHECKs, indexes, row-level security policies, grants,
-- triggers and the views that read them.
--
--   psql -v from=2025-01-01 -v months=36 -f partition_by_month.sql
--
-- makes `months` monthly partitions from `from` and a DEFAULT partition for
-- anything outside them. Used by `imprint-stations-bench --partitioned` and
-- `imprint-report-bench --partitioned` (docs/sync.md, "Partitions by month").
--
-- What partitioning changes, and why this is not a migration: a partitioned
-- table's primary key and unique indexes must contain the partition key, so
-- `attempts`' key becomes (id, started_at) and `attempt_steps`' (attempt_id,
-- n, at). The id of an attempt is then unique only together with its start
-- time: the same UUID with another started_at would be a second row. The
-- sync's `ON CONFLICT DO NOTHING` has no conflict target, so it still works
-- (a re-sent row has the same started_at: the same key), but the center no
-- longer enforces what the key said alone.

\set ON_ERROR_STOP 1
BEGIN;

CREATE FUNCTION pg_temp.partition_by_month(tbl text, col text, from_ date, months int) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    old text := tbl || '_unpartitioned';
    r record;
    pk text;
    indexes text[];
    triggers text[];
    views record;
    m date;
BEGIN
    -- What the table carries, read before it is renamed (so the texts name `tbl`).
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) INTO pk
    FROM pg_constraint c CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
    WHERE c.conrelid = tbl::regclass AND c.contype = 'p';
    SELECT array_agg(i.indexdef) INTO indexes FROM pg_indexes i
    WHERE i.schemaname = 'public' AND i.tablename = tbl
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname);
    SELECT array_agg(pg_get_triggerdef(t.oid)) INTO triggers FROM pg_trigger t WHERE t.tgrelid = tbl::regclass AND NOT t.tgisinternal;
    CREATE TEMP TABLE IF NOT EXISTS bench_views (name text, options text[], def text, done boolean DEFAULT false);
    INSERT INTO bench_views (name, options, def)
    SELECT DISTINCT v.relname, v.reloptions, pg_get_viewdef(v.oid)
    FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class
    WHERE d.refobjid = tbl::regclass AND v.oid <> d.refobjid AND v.relname NOT IN (SELECT name FROM bench_views);

    -- The old table and its index names step aside.
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tbl, old);
    FOR r IN SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = old::regclass LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname, left(r.relname, 40) || '_unpartitioned');
    END LOOP;

    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE) PARTITION BY RANGE (%I)',
                   tbl, old, col);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (%s, %I)', tbl, tbl || '_pkey', pk, col);
    FOR i IN 0 .. months - 1 LOOP
        m := from_ + make_interval(months => i);
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       tbl || '_' || to_char(m, 'YYYY_MM'), tbl, m::timestamptz, (m + interval '1 month')::timestamptz);
    END LOOP;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);

    -- Rows first, indexes after (a bulk load builds them faster).
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', tbl, old);
    FOR i IN 1 .. coalesce(array_length(indexes, 1), 0) LOOP
        EXECUTE indexes[i];
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(triggers, 1), 0) LOOP
        EXECUTE triggers[i];
    END LOOP;

    -- Row-level security and its policies.
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = old::regclass) THEN
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tbl);
    END IF;
    FOR r IN SELECT * FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = old LOOP
        EXECUTE format('CREATE POLICY %I ON %I AS %s FOR %s TO %s%s%s', r.policyname, tbl, r.permissive, r.cmd,
                       (SELECT string_agg(quote_ident(x), ', ') FROM unnest(r.roles) x),
                       CASE WHEN r.qual IS NOT NULL THEN ' USING (' || r.qual || ')' ELSE '' END,
                       CASE WHEN r.with_check IS NOT NULL THEN ' WITH CHECK (' || r.with_check || ')' ELSE '' END);
    END LOOP;
    -- Grants: the table's, then the columns'.
    FOR r IN SELECT a.grantee::regrole::text AS grantee, a.privilege_type FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
             WHERE c.oid = old::regclass AND a.grantee <> c.relowner AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT %s ON %I TO %s', r.privilege_type, tbl, r.grantee);
    END LOOP;
    FOR r IN SELECT t.attname, a.grantee::regrole::text AS grantee, a.privilege_type
             FROM pg_attribute t CROSS JOIN LATERAL aclexplode(t.attacl) a
             WHERE t.attrelid = old::regclass AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT %s (%I) ON %I TO %s', r.privilege_type, r.attname, tbl, r.grantee);
    END LOOP;

    -- The views read the new table (their texts, read before the rename, name it).
    FOR views IN SELECT * FROM bench_views WHERE NOT done LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %I%s AS %s', views.name,
                       CASE WHEN views.options IS NOT NULL THEN ' WITH (' || array_to_string(views.options, ', ') || ')' ELSE '' END,
                       views.def);
    END LOOP;
    UPDATE bench_views SET done = true;
    EXECUTE format('DROP TABLE %I', old);
    EXECUTE format('ANALYZE %I', tbl);
END
$fn$;

SELECT pg_temp.partition_by_month('attempts', 'started_at', :'from'::date, :months);
SELECT pg_temp.partition_by_month('attempt_steps', 'at', :'from'::date, :months);
COMMIT;

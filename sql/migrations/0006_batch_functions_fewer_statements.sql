-- SPEC §7 (small batches): the batch's two functions (0004) with fewer executor runs. Same
-- signatures, same results, same locks taken in the same order; only how much work PostgreSQL
-- does to run them changes. Measured by perf on the server under 16 clients of 10-item
-- batches, the read function cost ~150 µs of server CPU per batch, mostly executor start-up of
-- its eight statements and sorts, not the reads themselves (docs/PERFORMANCE.md, "Small
-- batches"). Now:
-- * the transaction's timeouts are PL/pgSQL assignments, which PostgreSQL evaluates without
--   starting an executor (a PERFORM starts one);
-- * the key allocation runs inline instead of through flexsvc_allocate_schedule_keys (kept
--   for writes.usable_new_keys), finds its sequence once per session (below), and nothing
--   sorts the keys: nextval hands them out in order;
-- * the arrays are aggregated in the order the locking subqueries read them: no aggregate
--   sorts (the caller turns every array but the new keys into a mapping anyway);
-- * statements with nothing to do are skipped (no explicit keys: no owner rows to lock; no
--   creates or no updates: no INSERT or no UPDATE);
-- * the write checks its outcome with an IF instead of a call to flexsvc_assert.

-- The identity sequence of group_flex_schedule_key. IMMUTABLE, so that the planner folds it
-- into each plan that uses it, once per server session: pg_get_serial_sequence itself looks the
-- sequence up in the catalogs (names, pg_depend) on every call. A plan using it is planned
-- again whenever group_flex_schedule changes (a DDL on the table invalidates it), which is the
-- only way the answer can change.
CREATE OR REPLACE FUNCTION flexsvc_schedule_key_sequence() RETURNS regclass
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_get_serial_sequence('group_flex_schedule', 'group_flex_schedule_key')::regclass $$;

-- What it reads and locks, and in which order: 0004's comment on this function, unchanged.
CREATE OR REPLACE FUNCTION flexsvc_read_batch_facts(
    in_statement_timeout text, in_lock_timeout text, in_exclusive boolean,
    in_group_id varchar, in_keys integer[], in_types varchar[], in_new_count integer,
    OUT new_keys integer[], OUT new_key_owners varchar[],
    OUT group_exists boolean,
    OUT parent_plan_ids varchar[], OUT parent_years varchar[], OUT parent_effective date[],
    OUT parent_term date[], OUT parent_first date[],
    OUT type_names varchar[], OUT type_rules text[],
    OUT owner_keys integer[], OUT owner_groups varchar[])
LANGUAGE plpgsql VOLATILE
-- 0005: the plans of these reads do not depend on the values; never re-plan them per call.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    applied text;
BEGIN
    IF in_exclusive IS NOT NULL THEN
        applied := set_config('statement_timeout', in_statement_timeout, true);
        applied := set_config('lock_timeout', in_lock_timeout, true);
        IF in_exclusive THEN
            PERFORM pg_advisory_xact_lock(1718379896, 2);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(1718379896, 2);
        END IF;
    END IF;
    IF in_new_count > 0 THEN
        -- As flexsvc_allocate_schedule_keys: never more keys than the sequence has left.
        WITH allocated AS MATERIALIZED (
            SELECT nextval(flexsvc_schedule_key_sequence())::integer AS key
            FROM generate_series(1, LEAST(in_new_count, (
                SELECT p.seqmax - COALESCE(pg_sequence_last_value(p.seqrelid), p.seqstart - 1)
                FROM pg_sequence AS p WHERE p.seqrelid = flexsvc_schedule_key_sequence()))))
        SELECT array_agg(a.key),
               array_agg((SELECT g.group_id FROM group_flex_schedule AS g
                          WHERE g.group_flex_schedule_key = a.key)::varchar)
        INTO new_keys, new_key_owners
        FROM allocated AS a;
    END IF;
    PERFORM FROM groups WHERE group_id = in_group_id FOR KEY SHARE;
    group_exists := FOUND;
    SELECT array_agg(p.plan_id), array_agg(p.calendar_year), array_agg(p.effective_date),
           array_agg(p.term_date), array_agg(p.first_payment_date)
    INTO parent_plan_ids, parent_years, parent_effective, parent_term, parent_first
    FROM (SELECT plan_id, calendar_year, effective_date, term_date, first_payment_date
          FROM group_flex WHERE group_id = in_group_id FOR SHARE) AS p;
    SELECT array_agg(t.schedule_type), array_agg(t.rule) INTO type_names, type_rules
    FROM (SELECT schedule_type, rule FROM flex_schedule_type
          WHERE schedule_type = ANY(in_types)
          ORDER BY schedule_type
          FOR KEY SHARE) AS t;
    IF cardinality(in_keys) > 0 THEN
        SELECT array_agg(o.key), array_agg(o.group_id) INTO owner_keys, owner_groups
        FROM (SELECT group_flex_schedule_key AS key, group_id FROM group_flex_schedule
              WHERE group_flex_schedule_key = ANY(in_keys)
              ORDER BY group_flex_schedule_key
              FOR UPDATE) AS o;
    END IF;
END
$$;

-- What it writes and checks: 0004's comment on this function, unchanged.
CREATE OR REPLACE FUNCTION flexsvc_upsert_schedules(
    in_group_id varchar, in_user varchar, in_keys integer[], in_plan_ids varchar[],
    in_years varchar[], in_dates timestamp[], in_types varchar[], in_creates boolean[],
    in_create_count integer)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    created integer := 0;
    updated integer := 0;
BEGIN
    IF in_create_count > 0 THEN
        INSERT INTO group_flex_schedule (
            group_flex_schedule_key, group_id, plan_id, calendar_year, schedule_date,
            schedule_type, entry_date, entry_user, update_date, update_user)
        SELECT i.key, in_group_id, i.plan_id, i.calendar_year, i.schedule_date, i.schedule_type,
               now(), in_user, now(), in_user
        FROM unnest(in_keys, in_plan_ids, in_years, in_dates, in_types, in_creates)
             AS i(key, plan_id, calendar_year, schedule_date, schedule_type, creates)
        WHERE i.creates
        ORDER BY i.key
        ON CONFLICT (group_flex_schedule_key) DO NOTHING;
        GET DIAGNOSTICS created = ROW_COUNT;
    END IF;
    IF cardinality(in_keys) > in_create_count THEN
        UPDATE group_flex_schedule AS t
        SET plan_id = i.plan_id,
            calendar_year = i.calendar_year,
            schedule_date = i.schedule_date,
            schedule_type = i.schedule_type,
            update_date = now(),
            update_user = in_user
        FROM unnest(in_keys, in_plan_ids, in_years, in_dates, in_types, in_creates)
             AS i(key, plan_id, calendar_year, schedule_date, schedule_type, creates)
        WHERE NOT i.creates AND t.group_flex_schedule_key = i.key AND t.group_id = in_group_id;
        GET DIAGNOSTICS updated = ROW_COUNT;
    END IF;
    IF (created = in_create_count AND updated = cardinality(in_keys) - in_create_count)
       IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'flexsvc_upsert_schedules: a key was created or moved by another '
                      'transaction meanwhile';
    END IF;
END
$$;

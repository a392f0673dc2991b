-- SPEC §7 (small batches): the batch's statements as server-side functions, so that a batch is
-- two round trips and PostgreSQL plans its statements once per server session, not once per
-- batch. PL/pgSQL keeps each statement's plan for the session, which prepared statements would
-- also do but cannot behind a pooler in transaction mode (docs/DEPLOYMENT.md, "PgBouncer"); a
-- function is an object of the database, so it works behind any pooler. Measured: the checked
-- write costs ~0.3 ms of server CPU as a function against ~0.6 ms as a statement, for a 10-item
-- batch (docs/PERFORMANCE.md). The queries that call them are in sql/queries/batch.sql.

-- flexsvc_assert(ok, message): true, or serialization_failure (SQLSTATE 40001) with ``message``.
-- A statement that checks its own outcome with it aborts the transaction when the check fails,
-- so a COMMIT pipelined after it does nothing; the service then plans the write again on fresh
-- facts (a retry that runs alone), as after any concurrent change. The message is logged, never
-- sent to a client.
CREATE OR REPLACE FUNCTION flexsvc_assert(ok boolean, message text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure', MESSAGE = message;
    END IF;
    RETURN true;
END
$$;

-- Server-assigned keys for key-0 creates, taken from the identity column's sequence; never more
-- than the sequence has left (nextval past its maximum is an error): when it is used up, fewer
-- keys come back and the batch answers 409 for the key-0 items left without one. Each key comes
-- with the group of a row that already has it (rows created with explicit keys past the
-- sequence), which the caller then skips; not locked: a row created with one of the other keys
-- meanwhile makes the checked write fail, and the batch is planned again.
CREATE OR REPLACE FUNCTION flexsvc_allocate_schedule_keys(
    wanted integer, OUT key integer, OUT owner varchar)
RETURNS SETOF record LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    WITH allocated AS MATERIALIZED (
        SELECT nextval(s.seq)::integer AS key
        FROM (SELECT pg_get_serial_sequence('group_flex_schedule',
                                            'group_flex_schedule_key')::regclass AS seq) AS s,
             generate_series(1, LEAST(wanted, (
                 SELECT p.seqmax - COALESCE(pg_sequence_last_value(s.seq), p.seqstart - 1)
                 FROM pg_sequence AS p WHERE p.seqrelid = s.seq))))
    SELECT a.key, (SELECT g.group_id FROM group_flex_schedule AS g
                   WHERE g.group_flex_schedule_key = a.key)::varchar
    FROM allocated AS a
    ORDER BY a.key;
END
$$;

-- A batch's first statement after BEGIN. Unless ``in_exclusive`` is NULL (the caller did this
-- already, with an Idempotency-Key's lock), it starts as begin_batch does (sql/queries/batch.sql):
-- the transaction's timeouts, then the batch writers' advisory lock, shared, or exclusive for a
-- retry that must run alone; lock_timeout bounds every wait that follows. (statement_timeout
-- applies from the next statement on.) Then everything the batch's outcomes depend on, read
-- under locks, in the order every batch takes them (so concurrent batches and lay-outs cannot
-- deadlock): ``new_count`` new keys (above);
-- the group (KEY SHARE: it cannot be deleted under the batch); its GroupFlex rows with the
-- dates calculated schedules depend on (SPEC §8; FOR SHARE: not deleted, anchor unchanged until
-- the batch ends; a lay-out locks its GroupFlex FOR NO KEY UPDATE, so a batch and a lay-out of
-- the same GroupFlex run one after the other); the schedule types the items name, with their
-- rules (KEY SHARE: not deleted; a changed rule makes the batch behave as if it ran before the
-- change; a type no item names is neither read nor locked); the existing
-- rows of the batch's explicit keys (FOR UPDATE, in key order). Arrays, NULL when empty.
CREATE OR REPLACE FUNCTION flexsvc_read_batch_facts(
    in_statement_timeout text, in_lock_timeout text, in_exclusive boolean,
    in_group_id varchar, in_keys integer[], in_types varchar[], in_new_count integer,
    OUT new_keys integer[], OUT new_key_owners varchar[],
    OUT group_exists boolean,
    OUT parent_plan_ids varchar[], OUT parent_years varchar[], OUT parent_effective date[],
    OUT parent_term date[], OUT parent_first date[],
    OUT type_names varchar[], OUT type_rules text[],
    OUT owner_keys integer[], OUT owner_groups varchar[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF in_exclusive IS NOT NULL THEN
        PERFORM set_config('statement_timeout', in_statement_timeout, true),
                set_config('lock_timeout', in_lock_timeout, true);
        IF in_exclusive THEN
            PERFORM pg_advisory_xact_lock(1718379896, 2);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(1718379896, 2);
        END IF;
    END IF;
    IF in_new_count > 0 THEN
        SELECT array_agg(a.key ORDER BY a.key), array_agg(a.owner ORDER BY a.key)
        INTO new_keys, new_key_owners
        FROM flexsvc_allocate_schedule_keys(in_new_count) AS a;
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
    SELECT array_agg(o.key ORDER BY o.key), array_agg(o.group_id ORDER BY o.key)
    INTO owner_keys, owner_groups
    FROM (SELECT group_flex_schedule_key AS key, group_id FROM group_flex_schedule
          WHERE group_flex_schedule_key = ANY(in_keys)
          ORDER BY group_flex_schedule_key
          FOR UPDATE) AS o;
END
$$;

-- The final row of every key of a batch, created or updated as the plan says (``in_creates``,
-- per key): planned creates inserted in key order (so concurrent creators cannot deadlock),
-- planned updates applied to rows of this group (locked since the facts were read). The write
-- checks its own outcome: every planned create inserted and every planned update applied;
-- otherwise another transaction created or moved one of the keys meanwhile and the transaction
-- is aborted (serialization_failure, as flexsvc_assert), so the batch is planned again on fresh
-- facts. Checked here, the COMMIT can follow in the same round trip. Two counts, no join: the
-- cost of the check does not depend on the plan PostgreSQL picks.
CREATE OR REPLACE FUNCTION flexsvc_upsert_schedules(
    in_group_id varchar, in_user varchar, in_keys integer[], in_plan_ids varchar[],
    in_years varchar[], in_dates timestamp[], in_types varchar[], in_creates boolean[],
    in_create_count integer)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    created integer;
    updated integer;
BEGIN
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
    PERFORM flexsvc_assert(
        created = in_create_count AND updated = cardinality(in_keys) - in_create_count,
        'flexsvc_upsert_schedules: a key was created or moved by another transaction '
        'meanwhile');
END
$$;

-- Queries of the batch upsert. Each block is one named query; parameters are psycopg's
-- %(name)s placeholders, never formatted into the text. Arrays use %(name)b: they travel in
-- binary, which spares the client the per-element text quoting (measured: docs/PERFORMANCE.md).

-- name: set_transaction_timeouts
-- Transaction-scoped (safe behind PgBouncer in transaction pooling mode).
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true);

-- name: begin_batch
-- set_transaction_timeouts plus the batch writers' advisory lock (transaction-scoped, so fine
-- behind PgBouncer): every batch holds it shared; a batch retrying after a concurrent change
-- takes it exclusive and so runs alone. Taken after lock_timeout is set, which bounds the wait.
-- (1718379896, 1) is the migrations' lock; (1718379896, 2) is this one.
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       CASE WHEN %(exclusive)s::boolean THEN pg_advisory_xact_lock(1718379896, 2)
            ELSE pg_advisory_xact_lock_shared(1718379896, 2) END;

-- name: lock_group
-- The group must exist; KEY SHARE keeps it from being deleted under the batch.
SELECT group_id FROM groups WHERE group_id = %(group_id)s FOR KEY SHARE;

-- name: lock_group_flex_parents
-- The GroupFlex rows items may reference, with the dates their calculated schedules depend on
-- (SPEC §8). FOR SHARE keeps them from being deleted and their anchor from changing until the
-- batch ends: a lay-out locks its GroupFlex FOR NO KEY UPDATE, which conflicts with this, so a
-- batch and a lay-out of the same GroupFlex run one after the other.
SELECT plan_id, calendar_year, effective_date, term_date, first_payment_date
FROM group_flex WHERE group_id = %(group_id)s FOR SHARE;

-- name: lock_schedule_types
-- Every type and its recurrence rule (NULL: dates entered by hand), read afresh by every batch.
-- KEY SHARE: a type cannot be deleted meanwhile; its rule may change, and the batch then
-- behaves as if it ran before the change (docs/DECISIONS.md).
SELECT schedule_type, rule FROM flex_schedule_type FOR KEY SHARE;

-- name: lock_schedules_by_key
-- Existing rows of the batch's explicit keys, locked in key order so concurrent batches cannot deadlock.
SELECT group_flex_schedule_key, group_id
FROM group_flex_schedule
WHERE group_flex_schedule_key = ANY(%(keys)b::integer[])
ORDER BY group_flex_schedule_key
FOR UPDATE;

-- name: allocate_schedule_keys
-- Server-assigned keys for key-0 creates, taken from the identity column's sequence; never
-- more than the sequence has left (nextval past its maximum is an error): when it is used up,
-- fewer keys come back and the batch answers 409 for the key-0 items left without one. Each
-- key comes with the group of a row that already has it (rows created with explicit keys past
-- the sequence), which the batch then skips; not locked: a row created with one of the other
-- keys meanwhile makes the checked upsert fail, and the batch is planned again.
WITH allocated AS MATERIALIZED (
    SELECT nextval(s.seq)::integer AS key
    FROM (SELECT pg_get_serial_sequence('group_flex_schedule',
                                        'group_flex_schedule_key')::regclass AS seq) AS s,
         generate_series(1, LEAST(%(count)s, (
             SELECT p.seqmax - COALESCE(pg_sequence_last_value(s.seq), p.seqstart - 1)
             FROM pg_sequence AS p WHERE p.seqrelid = s.seq))))
SELECT a.key, (SELECT g.group_id FROM group_flex_schedule AS g
               WHERE g.group_flex_schedule_key = a.key)
FROM allocated AS a
ORDER BY a.key;

-- name: advance_key_sequence
-- Keep the sequence past explicitly created keys so key-0 creates rarely meet them.
SELECT setval(s.seq, %(max_key)s)
FROM (SELECT pg_get_serial_sequence('group_flex_schedule', 'group_flex_schedule_key') AS seq) AS s
WHERE %(max_key)s > COALESCE(pg_sequence_last_value(s.seq::regclass), 0);

-- name: upsert_schedules
-- One statement for the whole batch: the final row of every key, created or updated as the
-- plan says (%(creates)b, per key). It checks its own outcome: every planned create inserted
-- (in key order, so concurrent creators cannot deadlock) and every planned update applied to a
-- row of this group (those rows are locked since the facts were read). Otherwise another
-- transaction created or moved one of the keys meanwhile, and flexsvc_assert aborts the
-- transaction (serialization_failure) so the batch is planned again on fresh facts. Checked
-- here, the COMMIT can follow in the same round trip. The check compares two counts: no join,
-- so its cost does not depend on the plan PostgreSQL picks.
WITH incoming AS (
    SELECT * FROM unnest(%(keys)b::integer[], %(plan_ids)b::varchar[],
                         %(calendar_years)b::varchar[], %(schedule_dates)b::timestamp[],
                         %(schedule_types)b::varchar[], %(creates)b::boolean[])
         AS u(key, plan_id, calendar_year, schedule_date, schedule_type, creates)),
created AS (
    INSERT INTO group_flex_schedule (
        group_flex_schedule_key, group_id, plan_id, calendar_year, schedule_date,
        schedule_type, entry_date, entry_user, update_date, update_user)
    SELECT i.key, %(group_id)s, i.plan_id, i.calendar_year, i.schedule_date, i.schedule_type,
           now(), %(user)s, now(), %(user)s
    FROM incoming AS i
    WHERE i.creates
    ORDER BY i.key
    ON CONFLICT (group_flex_schedule_key) DO NOTHING
    RETURNING 1),
updated AS (
    UPDATE group_flex_schedule AS t
    SET plan_id = i.plan_id,
        calendar_year = i.calendar_year,
        schedule_date = i.schedule_date,
        schedule_type = i.schedule_type,
        update_date = now(),
        update_user = %(user)s
    FROM incoming AS i
    WHERE NOT i.creates AND t.group_flex_schedule_key = i.key AND t.group_id = %(group_id)s
    RETURNING 1)
SELECT flexsvc_assert(
    (SELECT count(*) FROM created) = %(create_count)s
        AND (SELECT count(*) FROM updated) = %(update_count)s,
    'upsert_schedules: a key was created or moved by another transaction meanwhile');

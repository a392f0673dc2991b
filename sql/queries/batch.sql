-- Queries of the batch upsert. Each block is one named query; parameters are psycopg's
-- %(name)s placeholders, never formatted into the text. Arrays use %(name)b: they travel in
-- binary, which spares the client the per-element text quoting (measured: docs/PERFORMANCE.md).

-- name: set_transaction_timeouts
-- Transaction-scoped (safe behind PgBouncer in transaction pooling mode).
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true);

-- name: begin_batch
-- A lay-out's first statement (a batch does the same in flexsvc_read_batch_facts):
-- set_transaction_timeouts plus the batch writers' advisory lock (transaction-scoped, so fine
-- behind PgBouncer): every batch holds it shared; a batch retrying after a concurrent change
-- takes it exclusive and so runs alone. Taken after lock_timeout is set, which bounds the wait.
-- (1718379896, 1) is the migrations' lock; (1718379896, 2) is this one.
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       CASE WHEN %(exclusive)s::boolean THEN pg_advisory_xact_lock(1718379896, 2)
            ELSE pg_advisory_xact_lock_shared(1718379896, 2) END;

-- name: lock_group
-- The group must exist; KEY SHARE keeps it from being deleted under the lay-out (a batch locks
-- the same rows in flexsvc_read_batch_facts).
SELECT group_id FROM groups WHERE group_id = %(group_id)s FOR KEY SHARE;

-- name: lock_schedule_types
-- Every type and its recurrence rule (NULL: dates entered by hand), read afresh by every lay-out
-- (and by every batch, in flexsvc_read_batch_facts). KEY SHARE: a type cannot be deleted meanwhile; its rule may change, and the batch then
-- behaves as if it ran before the change (docs/DECISIONS.md).
SELECT schedule_type, rule FROM flex_schedule_type FOR KEY SHARE;

-- name: read_batch_facts
-- A batch's first statement after BEGIN: begin_batch's timeouts and writers' lock (unless
-- %(exclusive)s is NULL: an Idempotency-Key's begin took them), new keys, then the group, its
-- GroupFlex rows, the schedule types the items name and the rows of the explicit keys, locked
-- in that order
-- (the function and why it is one: sql/migrations/0004_batch_functions.sql).
SELECT * FROM flexsvc_read_batch_facts(
    %(statement_timeout)s, %(lock_timeout)s, %(exclusive)s::boolean,
    %(group_id)s, %(keys)b::integer[], %(types)b::varchar[], %(new_count)s);

-- name: allocate_schedule_keys
-- ``count`` new keys from the identity sequence, each with the group of a row that already has
-- it (flexsvc_allocate_schedule_keys, sql/migrations/0004_batch_functions.sql).
SELECT key, owner FROM flexsvc_allocate_schedule_keys(%(count)s);

-- name: advance_key_sequence
-- Keep the sequence past explicitly created keys so key-0 creates rarely meet them.
SELECT setval(s.seq, %(max_key)s)
FROM (SELECT pg_get_serial_sequence('group_flex_schedule', 'group_flex_schedule_key') AS seq) AS s
WHERE %(max_key)s > COALESCE(pg_sequence_last_value(s.seq::regclass), 0);

-- name: upsert_schedules
-- The whole batch's write, which checks its own outcome (every planned create inserted, every
-- planned update applied, else serialization_failure): flexsvc_upsert_schedules in
-- sql/migrations/0004_batch_functions.sql. Arrays travel in binary, one element per key.
SELECT flexsvc_upsert_schedules(
    %(group_id)s, %(user)s, %(keys)b::integer[], %(plan_ids)b::varchar[],
    %(calendar_years)b::varchar[], %(schedule_dates)b::timestamp[],
    %(schedule_types)b::varchar[], %(creates)b::boolean[], %(create_count)s);

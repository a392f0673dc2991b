-- Queries of the lay-out route (SPEC §8): PUT /groups/{groupID}/flexes/{planID}/{calendarYear}/
-- schedule. Locks are taken in the batch's order (group, GroupFlex, types, schedule rows in key
-- order), after the batch writers' advisory lock (begin_batch), so the two cannot deadlock.

-- name: lock_layout_group_flex
-- The laid-out GroupFlex. NO KEY UPDATE conflicts with the FOR SHARE a batch takes on its
-- group's GroupFlex rows: a batch and a lay-out of the same GroupFlex run one after the other.
SELECT effective_date, term_date, first_payment_date
FROM group_flex
WHERE group_id = %(group_id)s AND plan_id = %(plan_id)s AND calendar_year = %(calendar_year)s
FOR NO KEY UPDATE;

-- name: lock_group_flex_schedules
-- Every row of the GroupFlex (CUSTOM ones too: which types have a rule is decided from the
-- types read in the same transaction), locked in key order.
SELECT group_flex_schedule_key, schedule_date, schedule_type
FROM group_flex_schedule
WHERE group_id = %(group_id)s AND plan_id = %(plan_id)s AND calendar_year = %(calendar_year)s
ORDER BY group_flex_schedule_key
FOR UPDATE;

-- name: set_first_payment_date
UPDATE group_flex SET first_payment_date = %(first_payment_date)s
WHERE group_id = %(group_id)s AND plan_id = %(plan_id)s AND calendar_year = %(calendar_year)s
  AND first_payment_date IS DISTINCT FROM %(first_payment_date)s;

-- name: delete_schedules_by_key
DELETE FROM group_flex_schedule WHERE group_flex_schedule_key = ANY(%(keys)b::integer[]);

-- name: insert_laid_out_schedules
-- The missing series dates, with keys from the identity sequence. A key that exists meanwhile
-- is not inserted (and is missing from RETURNING): the lay-out then retries on fresh facts.
INSERT INTO group_flex_schedule (
    group_flex_schedule_key, group_id, plan_id, calendar_year, schedule_date, schedule_type,
    entry_date, entry_user, update_date, update_user)
SELECT u.key, %(group_id)s, %(plan_id)s, %(calendar_year)s, u.schedule_date, %(schedule_type)s,
       now(), %(user)s, now(), %(user)s
FROM unnest(%(keys)b::integer[], %(schedule_dates)b::timestamp[]) AS u(key, schedule_date)
ORDER BY u.key
ON CONFLICT (group_flex_schedule_key) DO NOTHING
RETURNING group_flex_schedule_key;

-- Queries of the single-record and list routes. Parameters are psycopg's %(name)s
-- placeholders, never formatted into the text. The one composed part, the ORDER BY list of
-- list_group_schedules, is built with psycopg.sql.Identifier from a fixed whitelist of column
-- names (flexsvc.records.SORT_COLUMNS), never from request text.

-- name: begin_read_snapshot
-- First statement of a list transaction: the count and the page see the same snapshot.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: group_exists
SELECT EXISTS (SELECT 1 FROM groups WHERE group_id = %(group_id)s);

-- name: count_group_schedules
-- The optional filters (SPEC §8): a NULL parameter means "any".
SELECT count(*) FROM group_flex_schedule
WHERE group_id = %(group_id)s
  AND (%(plan_id)s::text IS NULL OR plan_id = %(plan_id)s)
  AND (%(calendar_year)s::text IS NULL OR calendar_year = %(calendar_year)s)
  AND (%(schedule_type)s::text IS NULL OR schedule_type = %(schedule_type)s);

-- name: list_group_schedules
SELECT group_flex_schedule_key AS key, group_id, plan_id, calendar_year, schedule_date,
       schedule_type, entry_date, entry_user, update_date, update_user
FROM group_flex_schedule
WHERE group_id = %(group_id)s
  AND (%(plan_id)s::text IS NULL OR plan_id = %(plan_id)s)
  AND (%(calendar_year)s::text IS NULL OR calendar_year = %(calendar_year)s)
  AND (%(schedule_type)s::text IS NULL OR schedule_type = %(schedule_type)s)
ORDER BY {order_by}
LIMIT %(limit)s OFFSET %(offset)s;

-- name: get_group_schedule
SELECT group_flex_schedule_key AS key, group_id, plan_id, calendar_year, schedule_date,
       schedule_type, entry_date, entry_user, update_date, update_user
FROM group_flex_schedule
WHERE group_flex_schedule_key = %(key)s AND group_id = %(group_id)s;

-- name: delete_group_schedule
DELETE FROM group_flex_schedule
WHERE group_flex_schedule_key = %(key)s AND group_id = %(group_id)s
RETURNING group_flex_schedule_key;

-- Demo data for `make run`: one group with GroupFlex rows for two plans.

-- name: seed_demo_group
INSERT INTO groups (group_id, group_name) VALUES (%(group_id)s, %(group_name)s)
ON CONFLICT (group_id) DO NOTHING;

-- name: seed_demo_group_flex
-- A demo database kept from before calculated schedules gets the first payment date too; one
-- that a lay-out gave another first payment date keeps it.
INSERT INTO group_flex (group_id, plan_id, calendar_year, effective_date, term_date,
                        first_payment_date)
VALUES (%(group_id)s, %(plan_id)s, %(calendar_year)s, %(effective_date)s, %(term_date)s,
        %(first_payment_date)s)
ON CONFLICT (group_id, plan_id, calendar_year) DO UPDATE
SET first_payment_date = EXCLUDED.first_payment_date
WHERE group_flex.first_payment_date IS NULL;

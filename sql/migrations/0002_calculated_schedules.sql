-- SPEC §8: schedule types are recurrence rules stored as data, and a GroupFlex may name the
-- date its payment schedule builds on. Both columns are nullable, so adding them rewrites no
-- table and leaves existing rows as they are (safe on databases that already hold data).

-- An RFC 5545 recurrence rule without DTSTART/UNTIL (flexsvc/rules/recurrence.py says which
-- parts are accepted); NULL for a type whose dates are entered by hand (CUSTOM).
ALTER TABLE flex_schedule_type ADD COLUMN IF NOT EXISTS rule text;

-- The built-in rules. Only a type that has no rule yet gets one: an operator's rule is kept.
UPDATE flex_schedule_type AS t
SET rule = seeded.rule
FROM (VALUES
    ('WEEKLY',      'FREQ=WEEKLY'),
    ('BIWEEKLY',    'FREQ=WEEKLY;INTERVAL=2'),
    ('SEMIMONTHLY', 'FREQ=MONTHLY;BYMONTHDAY=15,-1'),
    ('MONTHLY',     'FREQ=MONTHLY'),
    ('QUARTERLY',   'FREQ=MONTHLY;INTERVAL=3')
) AS seeded (schedule_type, rule)
WHERE t.schedule_type = seeded.schedule_type AND t.rule IS NULL;

-- VBA's GroupFlex.First_Payment_Date: the anchor of the calculated dates (else effective_date).
ALTER TABLE group_flex ADD COLUMN IF NOT EXISTS first_payment_date date;

-- SPEC §7 (small batches): the batch's read function plans its statements once per server
-- session, as 0004 meant it to. PL/pgSQL caches each statement's plan, but with parameters
-- (here arrays of keys and types) PostgreSQL's plan cache keeps making a custom plan for every
-- call when it estimates the generic one to be worse, so the reads were planned again on every
-- batch. Their best plans do not depend on the values (primary-key and unique-index lookups,
-- and two small tables), so the generic plan is forced for the function (and what it calls,
-- the key allocation included). Measured on one backend, 10-item batches: ~1.55 -> ~1.28 ms of
-- server CPU per batch transaction (docs/PERFORMANCE.md, "Small batches").
ALTER FUNCTION flexsvc_read_batch_facts(
    text, text, boolean, varchar, integer[], varchar[], integer)
    SET plan_cache_mode = force_generic_plan;

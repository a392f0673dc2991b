-- Queries of idempotent retries (SPEC §9; flexsvc/data/idempotency.py). The scope's lock is a
-- transaction-scoped advisory lock on one bigint (a hash of api_key_name, jwt_user and the
-- key): fine behind PgBouncer in transaction mode, released by COMMIT or ROLLBACK. Single-key
-- advisory locks never meet the two-key ones (1718379896, n) of migrations and batch writers.

-- name: begin_idempotent_write
-- A batch's or lay-out's begin_batch, plus a try at the scope's lock: true when this request
-- holds it now (the lookup pipelined after this statement then sees every committed record).
-- The writers' lock comes first, as in every writing transaction, so the order never varies.
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       CASE WHEN %(exclusive)s::boolean THEN pg_advisory_xact_lock(1718379896, 2)
            ELSE pg_advisory_xact_lock_shared(1718379896, 2) END,
       pg_try_advisory_xact_lock(%(scope_lock)s);

-- name: begin_idempotent_delete
-- set_transaction_timeouts, plus a try at the scope's lock (a delete takes no writers' lock).
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       pg_try_advisory_xact_lock(%(scope_lock)s);

-- name: wait_idempotency_lock
-- Another request of the same scope holds the lock: wait for it to end, at most lock_timeout.
SELECT pg_advisory_xact_lock(%(scope_lock)s);

-- name: find_idempotency_record
-- The unexpired record of the scope. A statement of its own, after the lock was taken, so its
-- snapshot includes a record committed by the request that held the lock before.
SELECT fingerprint, status, content_type, location, body
FROM flexsvc_idempotency
WHERE api_key_name = %(api_key_name)s AND jwt_user = %(jwt_user)s
  AND idempotency_key = %(idempotency_key)s AND expires_at > now();

-- name: record_idempotency
-- The answer, in the transaction of the writes, with a bounded prune of expired records
-- (oldest first; rows another transaction holds are left for the next one; never this
-- scope's, which the insert replaces), so no separate job is needed. An expired record of the
-- scope is replaced; a live one is not, which only happens if the scope's lock was bypassed:
-- flexsvc_assert then aborts the transaction (serialization_failure) and the request is
-- retried, finds the record and replays it. Checked here, the COMMIT can follow in the same
-- round trip.
WITH pruned AS (
    DELETE FROM flexsvc_idempotency
    WHERE (api_key_name, jwt_user, idempotency_key) IN (
        SELECT api_key_name, jwt_user, idempotency_key FROM flexsvc_idempotency
        WHERE expires_at <= now()
          AND (api_key_name, jwt_user, idempotency_key)
              <> (%(api_key_name)s, %(jwt_user)s, %(idempotency_key)s)
        ORDER BY expires_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)),
recorded AS (
    INSERT INTO flexsvc_idempotency AS r (
        api_key_name, jwt_user, idempotency_key, fingerprint, status, content_type, location,
        body, created_at, expires_at)
    VALUES (%(api_key_name)s, %(jwt_user)s, %(idempotency_key)s, %(fingerprint)b, %(status)s,
            %(content_type)s, %(location)s, %(body)b, now(),
            now() + make_interval(secs => %(ttl_seconds)s))
    ON CONFLICT (api_key_name, jwt_user, idempotency_key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status,
        content_type = EXCLUDED.content_type, location = EXCLUDED.location,
        body = EXCLUDED.body, created_at = EXCLUDED.created_at,
        expires_at = EXCLUDED.expires_at
    WHERE r.expires_at <= now()
    RETURNING true)
SELECT flexsvc_assert(EXISTS (SELECT FROM recorded),
                      'record_idempotency: the key was recorded meanwhile');

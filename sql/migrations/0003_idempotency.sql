-- SPEC §9: the recorded answers of requests sent with an Idempotency-Key. A row is written in
-- the same transaction as the request's own writes, so it exists exactly when they committed.
-- Scope (tenant, caller, key): the tenant is this database; the caller is the API key's name
-- and the JWT user, each '' when the request did not carry it (names and users are never
-- empty, so '' cannot be mistaken for one).
CREATE TABLE IF NOT EXISTS flexsvc_idempotency (
    api_key_name    text        NOT NULL,
    jwt_user        text        NOT NULL,
    idempotency_key text        NOT NULL,
    -- SHA-256 of the method, path, query string and body bytes (flexsvc/http/idempotency.py).
    fingerprint     bytea       NOT NULL,
    status          smallint    NOT NULL,
    content_type    text,
    location        text,
    body            bytea       NOT NULL,     -- the exact bytes of the answer
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,     -- an expired row is never replayed
    PRIMARY KEY (api_key_name, jwt_user, idempotency_key)
);

-- Pruning (a bounded DELETE with every new record, no separate job) finds expired rows here.
CREATE INDEX IF NOT EXISTS flexsvc_idempotency_expires_at ON flexsvc_idempotency (expires_at);

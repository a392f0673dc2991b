-- Bookkeeping of applied migrations. The lock is transaction-scoped so migrations also work
-- behind PgBouncer in transaction pooling mode.

-- name: lock_migrations
SELECT pg_advisory_xact_lock(1718379896, 1);

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS flexsvc_schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: list_applied_migrations
SELECT version, checksum FROM flexsvc_schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO flexsvc_schema_migrations (version, checksum) VALUES (%(version)s, %(checksum)s);

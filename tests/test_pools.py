"""SPEC §3: one bounded pool per target database per process, created on first use."""

from __future__ import annotations

from flexsvc import create_app
from flexsvc.config import settings_from_mapping
from tests.conftest import settings_mapping
from tests.helpers import headers, item, put_batch, statuses


def test_pools_are_created_on_first_use_and_bounded(tenant_dsns, clean_db):
    mapping = settings_mapping(tenant_dsns, pool={"min_size": 0, "max_size": 3})
    app = create_app(settings_from_mapping(mapping, environ={}))
    pools = app.extensions["flexsvc.pools"]
    try:
        client = app.test_client()
        assert pools.stats() == {}
        assert statuses(put_batch(client, [item(1)])) == [201]
        assert statuses(put_batch(client, [item(2)])) == [201]
        stats = pools.stats()
        assert list(stats) == ["main"]          # "other" was never used, so never connected
        assert stats["main"]["pool_max"] == 3
        assert stats["main"]["pool_size"] == 1  # both batches reused one connection
        assert pools.get("main") is pools.get("main")
    finally:
        pools.close()


def test_tables_and_seeded_schedule_types(clean_db):
    columns = clean_db.execute(
        "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
        "WHERE table_name IN ('groups', 'group_flex', 'flex_schedule_type') "
        "ORDER BY table_name, ordinal_position").fetchall()
    assert columns == [
        ("flex_schedule_type", "schedule_type", "NO"), ("flex_schedule_type", "description", "NO"),
        ("flex_schedule_type", "rule", "YES"),
        ("group_flex", "group_id", "NO"), ("group_flex", "plan_id", "NO"),
        ("group_flex", "calendar_year", "NO"), ("group_flex", "effective_date", "NO"),
        ("group_flex", "term_date", "NO"), ("group_flex", "first_payment_date", "YES"),
        ("groups", "group_id", "NO"), ("groups", "group_name", "YES"),
    ]
    identity = clean_db.execute(
        "SELECT is_identity, identity_generation FROM information_schema.columns "
        "WHERE table_name = 'group_flex_schedule' AND column_name = 'group_flex_schedule_key'"
    ).fetchone()
    assert identity == ("YES", "BY DEFAULT")


def test_prepared_statements_are_a_knob_off_by_default(tenant_dsns, clean_db):
    """By default psycopg prepares nothing (PgBouncer-safe, SPEC §10): the only prepared
    statements are the batch's two calls, named by a hash of their SQL (flexsvc.data.roundtrip:
    safe behind a pooler, redone unnamed when a server did not keep them). With the knob on (a
    direct connection), the other routes prepare their queries too and answer the same."""
    def run(pool: dict) -> tuple[list, int]:
        mapping = settings_mapping(tenant_dsns, pool={"min_size": 0, "max_size": 1, **pool})
        app = create_app(settings_from_mapping(mapping, environ={}))
        pools = app.extensions["flexsvc.pools"]
        try:
            client = app.test_client()
            answers = [statuses(put_batch(client, [item(1, plan_ID=f"P{1 + n % 2}"), item(0)]))
                       for n in range(4)]
            listed = [client.get("/groups/G1/flex-schedules", headers=headers()).status_code
                      for _ in range(3)]
            with pools.connection("main") as conn:
                prepared = conn.execute(
                    "SELECT count(*) FILTER (WHERE name NOT LIKE 'flexsvc\\_%'), "
                    "count(*) FILTER (WHERE name LIKE 'flexsvc\\_%') "
                    "FROM pg_prepared_statements").fetchone()
            return [*answers, listed], prepared
        finally:
            pools.close()

    off, prepared_off = run({})
    clean_db.execute("TRUNCATE group_flex_schedule RESTART IDENTITY")
    on, prepared_on = run({"prepare_threshold": 0})
    assert off == on == [[201, 201], [200, 201], [200, 201], [200, 201], [200, 200, 200]]
    assert prepared_off == (0, 2)
    assert prepared_on[0] > 3 and prepared_on[1] == 2

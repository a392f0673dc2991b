"""`make bench`'s moving parts start and count right (the bench itself is not run here).

The minimal app answers a small batch like the service would, the bare-SQL client and wrk's
script report a right run as 0 errors and a wrong one as errors, and the WEEKLY variant's
precomputed dates are the SPEC §8 series dates.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import orjson
import psycopg
import pytest

from bench import minimal_app, small
from bench.service import Gunicorn, write_config
from bench.workload import GROUP, make_batch, prepare_database, reset, small_batches, weekly_date
from tests.conftest import create_database, drop_database

EXISTING = 50


@pytest.fixture(scope="module")
def bench_dsn(pg_admin_dsn: str):
    name = f"flexsvc_test_bench_{uuid.uuid4().hex[:8]}"
    dsn = create_database(pg_admin_dsn, name)
    prepare_database(dsn, EXISTING)
    yield dsn
    drop_database(pg_admin_dsn, name)


def count_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM group_flex_schedule").fetchone()[0]


def test_minimal_app_upserts_a_small_batch(bench_dsn: str) -> None:
    reset(bench_dsn, EXISTING)
    app = minimal_app.create_app(bench_dsn, 2)
    try:
        batch = small_batches(10, 4, EXISTING)[1]
        response = app.test_client().put(f"/groups/{GROUP}/flex-schedules-batch",
                                          data=orjson.dumps(batch))
        assert response.status_code == 200
        statuses = Counter(item["status"] for item in response.get_json()["data"])
        assert statuses == {200: 5, 201: 5}
        assert count_rows(bench_dsn) == EXISTING + 5
        with psycopg.connect(bench_dsn) as conn:   # keys 6..10 updated as sent
            row = conn.execute("SELECT plan_id, schedule_type FROM group_flex_schedule "
                               "WHERE group_flex_schedule_key = 6").fetchone()
        assert row == (batch[0]["plan_ID"], batch[0]["schedule_Type"].upper())
    finally:
        app.extensions["bench.pool"].close()


def test_bare_sql_client_counts_right_and_wrong_answers(bench_dsn: str) -> None:
    reset(bench_dsn, EXISTING)
    batches = small_batches(10, 10, EXISTING)
    run = small.run_bare_sql(bench_dsn, batches, 2, 0.3)
    assert run.requests > 0 and run.errors == 0, run.detail
    # An "update" of a key that does not exist creates a row: 6 created, not 5, is an error.
    wrong = [dict(batches[0][0], groupFlexSchedule_Key=99_999), *batches[0][1:]]
    rows = count_rows(bench_dsn)
    run = small.run_bare_sql(bench_dsn, [wrong], 1, 0.2)
    assert run.requests > 0 and run.errors == run.requests, run.detail
    assert count_rows(bench_dsn) == rows             # each wrong transaction rolled back


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_script_counts_right_and_wrong_answers(bench_dsn: str, tmp_path: Path) -> None:
    reset(bench_dsn, EXISTING)
    # The minimal app ignores it, but gunicorn.conf.py checks it before starting (as in the bench).
    config = tmp_path / "bench.toml"
    write_config(config, bench_dsn, 2)
    server = Gunicorn(config, tmp_path / "minimal.log", workers=1, threads=2,
                      app="bench.minimal_app:app",
                      env={"FLEXSVC_BENCH_MINIMAL_DSN": bench_dsn,
                           "FLEXSVC_BENCH_MINIMAL_POOL": "2"})
    try:
        server.wait_ready()
        batches = small_batches(10, 10, EXISTING)
        right = small.HttpTarget.build(server.port, 200, {}, batches, tmp_path, "right")
        run = small.run_wrk(right, 2, 1, 1)
        assert run.requests > 0 and run.errors == 0, run.detail
        wrong = small.HttpTarget.build(server.port, 207, {}, batches, tmp_path, "wrong")
        run = small.run_wrk(wrong, 2, 1, 1)
        assert run.requests > 0 and run.errors >= run.requests, run.detail
    finally:
        server.stop()


def test_weekly_variant_sends_valid_dates_and_precomputes_the_series() -> None:
    batch = make_batch(50, variant="weekly")
    assert {t.upper() for t in (it["schedule_Type"] for it in batch.items)} == {"WEEKLY"}
    for stored in batch.schedule_dates:       # every bench GroupFlex: 2026-01-01 .. 12-31
        assert (stored.date() - date(2026, 1, 1)).days % 7 == 0
        assert stored.date() <= date(2026, 12, 31) and stored.time() == datetime.min.time()
    assert weekly_date(datetime(2026, 1, 2, 9, 30)) == datetime(2026, 1, 8)
    assert weekly_date(datetime(2026, 1, 8)) == datetime(2026, 1, 8)
    assert weekly_date(datetime(2026, 12, 31, 23, 59)) == datetime(2026, 12, 31)


def test_scratch_server_drops_the_databases_it_made(pg_admin_dsn: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """bench.cpu, bench.inprocess and bench.profile make their databases on FLEXSVC_BENCH_DSN's
    server (or an embedded one) and leave nothing behind."""
    from bench.scratch import scratch_server

    monkeypatch.setenv("FLEXSVC_BENCH_DSN", pg_admin_dsn)
    with scratch_server() as server:
        assert server.embedded is None
        dsn = server.database("scratchtest")
        with psycopg.connect(dsn) as conn:
            name = conn.execute("SELECT current_database()").fetchone()[0]
        assert name.startswith("flexsvc_scratchtest_")
    with psycopg.connect(pg_admin_dsn) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (name,)).fetchone()[0]
    assert left == 0

"""Graceful stop (SPEC §7, gunicorn.conf.py graceful_timeout): SIGTERM to gunicorn while a
10,000-item batch is in flight lets it finish; the client gets its 207 and the rows are
committed. The batch is held inside the database (a lock) until after the signal, so the test
does not depend on timing luck."""

from __future__ import annotations

import signal
import threading
import time

import psycopg
import pytest
import requests

from tests.conftest import settings_mapping
from tests.helpers import headers, item
from tests.servers import run_gunicorn, write_config

pytestmark = pytest.mark.slow


def wait_for_blocked_backend(dsn: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = 'flexsvc' "
                            "AND wait_event_type = 'Lock'").fetchone():
                return
            time.sleep(0.05)
    raise AssertionError("the batch never reached the database")


def test_sigterm_lets_an_inflight_10000_item_batch_commit(tenant_dsns, db, tmp_path):
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping(tenant_dsns))
    batch = [item(k, schedule_Date="2026-02-01") for k in range(1, 5001)] + [
        item(0, plan_ID="P2") for _ in range(5000)]
    outcome: dict = {}

    def send(url: str) -> None:
        try:
            response = requests.put(url + "/groups/G1/flex-schedules-batch", json=batch,
                                    headers=headers(), timeout=90)
            outcome["status"] = response.status_code
            outcome["body"] = response.json()
        except Exception as exc:
            outcome["error"] = exc

    with run_gunicorn(config, workers=2, threads=4) as server:
        with psycopg.connect(tenant_dsns["main"]) as blocker:
            blocker.execute("SELECT 1 FROM groups WHERE group_id = 'G1' FOR UPDATE")
            client = threading.Thread(target=send, args=(server.url,), daemon=True)
            client.start()
            wait_for_blocked_backend(tenant_dsns["main"])
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)   # the master and workers are shutting down now
            assert server.process.poll() is None, "gunicorn did not wait for the batch"
            blocker.rollback()  # let the batch go on (well within lock_timeout)
        client.join(60)
        assert not client.is_alive(), "the client never got an answer"
        exit_code = server.process.wait(60)
        output = server.output()

    assert "error" not in outcome, outcome.get("error")
    assert outcome["status"] == 207, outcome
    results = outcome["body"]["data"]
    assert len(results) == 10_000 and {r["status"] for r in results} == {201}
    assert exit_code == 0, output[-2000:]
    (count,) = db.execute("SELECT count(*) FROM group_flex_schedule").fetchone()
    assert count == 10_000
    (p2,) = db.execute("SELECT count(*) FROM group_flex_schedule WHERE plan_id = 'P2'").fetchone()
    assert p2 == 5000
